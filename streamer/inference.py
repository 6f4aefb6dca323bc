"""The inference worker: newest frame -> resize, encode, POST -> result in original pixels.

A dispatcher thread decides when the next request goes out (pacing by latency, max_fps,
the circuit breaker, Retry-After, the call budget and the motion gate) and takes the newest
frame at that moment; request threads, up to max_in_flight of them busy at once, do the
work and hand results in to ``NewestResults``, where a late one is counted and dropped.
The request thread that got an answer also publishes it, at its release time: the work of
a call is then done by two wake-ups of one thread, not spread over three threads.
"""

from __future__ import annotations

import logging
import dataclasses
import queue
import threading
import time
from dataclasses import dataclass
from collections.abc import Callable

from streamer.backoff import Backoff, FaultLog
from streamer.breaker import CircuitBreaker
from streamer.client import DetectionClient
from streamer.errors import ApiBadRequest, ApiFatalError, ApiMalformedResponse, ApiTransientError
from streamer.frames import DropOldestQueue, Frame, NewestResults, Result
from streamer.imaging import prepare_upload, scale_predictions
from streamer.pacing import CallBudget, MotionGate, Pacing
from streamer.predictions import Parsed, filter_classes
from streamer.stats import Stats

log = logging.getLogger(__name__)

# The longest an idle thread sleeps before it looks at the stop flag again.  Each wake-up
# costs CPU (about 0.1 to 0.3 ms on a 2-core machine); ``join`` wakes every thread at once,
# so this bounds only a stop that nobody follows with a join.
IDLE_WAIT_S = 2.0


@dataclass(frozen=True)
class InferenceSettings:
    max_side: int = 640
    jpeg_quality: int = 75
    classes: tuple[str, ...] = ()
    max_in_flight: int = 1
    max_fps: float | None = None  # None: no cap
    min_change: float = 0.0  # 0: the motion gate is off
    budget_calls: int | None = None
    budget_period: str = "hour"


def make_result(frame: Frame, parsed: Parsed, upload, model: str, sent_at: float,
                received_at: float, classes: tuple[str, ...] = ()) -> Result:
    """A Result for one frame, its boxes scaled from the sent image back to the frame."""
    sent_w = parsed.image_width or upload.sent_width
    sent_h = parsed.image_height or upload.sent_height
    predictions = parsed.predictions
    if isinstance(predictions, list):
        predictions = scale_predictions(predictions, frame.width / sent_w, frame.height / sent_h)
    predictions = filter_classes(predictions, list(classes))
    return Result(
        source=frame.source, frame_id=frame.frame_id, captured_at=frame.captured_at,
        captured_mono=frame.captured_mono, width=frame.width, height=frame.height,
        predictions=predictions, model=model, sent_at=sent_at, received_at=received_at,
        server_time_s=parsed.time_s, inference_id=parsed.inference_id,
        extra=parsed.extra,
    )


class InferenceWorker:
    """Threads ``streamer.inference`` (the dispatcher) and ``streamer.request-N``.

    Each request takes the newest frame at the moment it is sent, never one already sent.
    400s and malformed answers skip the frame; 429/5xx/timeouts/refused connections go
    through a circuit breaker (see ``breaker``): Retry-After is always honoured, and after
    a few failures in a row one probe at a time is sent per backoff interval until the API
    answers.  401/402/403/404/423 record a fatal error and set the stop event.
    """

    def __init__(self, queue_: DropOldestQueue[Frame], client: DetectionClient, results: NewestResults,
                 stats: Stats, stop: threading.Event, settings: InferenceSettings,
                 backoff: Backoff | None = None, failures_to_open: int = 3,
                 publish_due: Callable[[], None] | None = None):
        self.queue = queue_
        self.client = client
        self.results = results
        self.publish_due = publish_due  # publishes the results whose release time has come
        self.stats = stats
        self.stop = stop
        self.settings = settings
        self.backoff = backoff or Backoff(0.5, 30.0)
        self.breaker = CircuitBreaker(self.backoff, failures_to_open)
        self.pacing = Pacing(settings.max_in_flight, settings.max_fps)
        self.budget = CallBudget(settings.budget_calls, settings.budget_period)
        self.gate = MotionGate(settings.min_change)
        self._refusal_backoff = Backoff(self.backoff.initial_s, self.backoff.max_s)
        self.error: BaseException | None = None
        self.finished_frames = 0  # frames taken from the queue and fully handled
        self.pause_until = 0.0  # monotonic end of a pause (backoff, Retry-After), else 0
        self._faults = FaultLog(log, f"API {client.endpoint}")
        self._skips = FaultLog(log, "API refused a frame", action="frame skipped")
        self._refused_in_row = 0
        # After this many refused frames in a row the next ones are paced by the backoff:
        # a 400 that every frame gets (e.g. a missing key) must not hammer the API.
        self.refusals_before_backoff = 3
        self._lock = threading.Condition()  # guards the counts below and the breaker
        self._in_flight = 0
        self._waiting_for_capacity = False  # the dispatcher waits for a request to end
        self._last_result: Result | None = None
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._dispatch, name="streamer.inference", daemon=True)]
        # One thread more than requests in flight: a thread holding an early answer until
        # its release time must not keep the next request from going out.
        request_threads = settings.max_in_flight + (1 if settings.max_in_flight > 1 else 0)
        self._threads += [threading.Thread(target=self._serve, name=f"streamer.request-{i + 1}", daemon=True)
                          for i in range(request_threads)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def idle(self) -> bool:
        """No frame waiting and none being handled (the queue counts what it handed out)."""
        with self._lock:
            return self.queue.pending() == 0 and self.queue.taken == self.finished_frames

    def paused_beyond_backoff(self) -> bool:
        """Pausing longer than our own backoff cap: a server's long Retry-After."""
        return self.pause_until - time.monotonic() > self.backoff.max_s

    def join(self, timeout: float) -> bool:
        """Wake every thread (they see the stop flag at once) and wait for them, up to timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._lock.notify_all()
        self.queue.wake()
        for _ in self._threads:
            self._work.put(None)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def _fail(self, exc: BaseException) -> None:
        if not isinstance(exc, ApiFatalError):
            log.error("inference stopped by an unexpected error", exc_info=exc)
        if self.error is None:
            self.error = exc
        self.stop.set()

    # --- the dispatcher ---

    def _dispatch(self) -> None:
        cpu_start = time.thread_time()
        try:
            while not self.stop.is_set():
                self.stats.dispatch_cpu_s = time.thread_time() - cpu_start
                with self._lock:  # check and wait under one lock: a request ending is never missed
                    if self.stop.is_set():  # seen under the lock join() notifies under: never missed
                        break
                    wait_s = self._wait_s()
                    if wait_s is None or wait_s > 0:  # None: at capacity, woken when a request ends
                        self._waiting_for_capacity = wait_s is None
                        self._lock.wait(IDLE_WAIT_S if wait_s is None else min(wait_s, IDLE_WAIT_S))
                        self._waiting_for_capacity = False
                        continue
                frame = self.queue.get_newest(timeout=IDLE_WAIT_S, stop=self.stop)
                if frame is not None:
                    self._send(frame)
        except BaseException as exc:  # fail fast: record, stop everything
            self._fail(exc)

    def _wait_s(self) -> float | None:
        """Seconds until a request may go out (0: now), None while at capacity (lock held)."""
        now = time.monotonic()
        if self.pause_until > now:
            return self.pause_until - now
        if self.breaker.is_open and self._in_flight:
            return None  # one probe at a time while the API is down
        return self.pacing.wait_s(self._in_flight)

    def _send(self, frame: Frame) -> None:
        if self.budget.exhausted():  # the call this slot would have made is skipped
            with self._lock:
                self.finished_frames += 1
                self.pacing.sent()
                self.stats.skipped_budget += 1
                self.stats.last_skip_mono = time.monotonic()
            return
        thumb = self.gate.thumbnail(frame.image) if self.gate.enabled else None
        if thumb is not None and not self.gate.worth_sending(thumb):
            self._reuse(frame)
            return
        self.budget.spend()
        with self._lock:
            self._in_flight += 1
            self.pacing.sent()
        self._work.put((frame, thumb))

    def _reuse(self, frame: Frame) -> None:
        """The frame hardly differs from the last one answered: republish that one's result.

        Not while a request is in flight: its answer (for an older frame) would then be
        dropped as late.  The gate's reference is the frame of ``_last_result``, set only
        when an answer arrives, so the boxes republished always belong to the scene."""
        with self._lock:
            self.pacing.sent()
            self.stats.skipped_no_change += 1
            self.stats.last_skip_mono = time.monotonic()
            last = self._last_result if not self._in_flight else None
        try:
            if last is None:
                return
            predictions = last.predictions
            if (last.width, last.height) != (frame.width, frame.height) and isinstance(predictions, list):
                predictions = scale_predictions(predictions, frame.width / last.width, frame.height / last.height)
            self.results.offer(dataclasses.replace(
                last, frame_id=frame.frame_id, captured_at=frame.captured_at, captured_mono=frame.captured_mono,
                width=frame.width, height=frame.height, predictions=predictions, reused=True))
            if self.publish_due is not None:
                self.publish_due()
        finally:
            with self._lock:  # after the offer: idle() must not turn true before it lands
                self.finished_frames += 1

    # --- the request threads ---

    def _serve(self) -> None:
        cpu_mark = time.thread_time()  # all of this thread's CPU goes to stats.request_cpu_s
        try:
            while not self.stop.is_set():
                cpu_now = time.thread_time()
                self.stats.add_request_cpu(cpu_now - cpu_mark)
                cpu_mark = cpu_now
                try:
                    work = self._work.get(timeout=IDLE_WAIT_S)
                except queue.Empty:
                    continue
                if work is None:  # join() wakes the threads with these
                    continue
                frame, thumb = work
                pause_s, release_at = 0.0, None
                steps_from = time.thread_time()
                try:
                    pause_s, release_at = self._infer(frame, thumb)
                finally:
                    self.stats.add_steps_cpu(time.thread_time() - steps_from)
                    with self._lock:
                        self._in_flight -= 1
                        self.finished_frames += 1
                        if pause_s:
                            self.pause_until = max(self.pause_until, time.monotonic() + pause_s)
                        if self._waiting_for_capacity:
                            self._lock.notify_all()
                if release_at is not None:
                    self._publish_at(release_at)
        except BaseException as exc:  # ApiFatalError, or a bug: record, stop everything
            self._fail(exc)

    def _publish_at(self, release_at: float) -> None:
        """Publish the results due at release_at (a monotonic time), from this thread.  The
        request is no longer in flight while it waits: its slot is free for the next one."""
        if self.publish_due is None:
            return
        hold_s = release_at - time.monotonic()
        if hold_s > 0 and self.stop.wait(hold_s):  # at most half the request's own latency
            return  # stopping: the pipeline publishes what is left
        steps_from = time.thread_time()
        self.publish_due()
        self.stats.add_steps_cpu(time.thread_time() - steps_from)

    def _infer(self, frame: Frame, thumb=None) -> tuple[float, float | None]:
        """Handle one frame: the seconds to pause before the next request (0 after a success),
        and when its result is due for publishing (None: there is no result)."""
        settings = self.settings
        upload = prepare_upload(frame.image, settings.max_side, settings.jpeg_quality)
        sent_at, sent_mono = time.time(), time.monotonic()
        with self._lock:
            self.stats.requests += 1
            self.stats.bytes_sent += len(upload.body)
            probe = self.breaker.is_open  # sent while the API was down
            self.breaker.before_request()
        try:
            parsed = self.client.infer(upload.body)
        except ApiTransientError as exc:
            with self._lock:
                return self._transient(exc, probe), None
        except (ApiMalformedResponse, ApiBadRequest) as exc:
            with self._lock:
                return self._refused(exc), None
        received_at = time.time()
        result = make_result(frame, parsed, upload, self.client.model, sent_at, received_at, settings.classes)
        with self._lock:
            usual_s = self.pacing.latency_s  # before this answer joins the estimate
            if self._succeeded(result, time.monotonic() - sent_mono) and thumb is not None:
                self.gate.sent(thumb)  # the gate compares later frames with this answered one
        release_at = 0.0
        if settings.max_in_flight > 1 and usual_s is not None:
            # An early answer waits until the usual latency has passed (holding it by at most
            # half its own latency), so that results go out at the even pace they were sent at.
            release_at = sent_mono + min(usual_s, 1.5 * (time.monotonic() - sent_mono))
        self.results.offer(result, release_at)
        self.stats.inference_rate.tick()
        return 0.0, release_at

    def _succeeded(self, result: Result, latency_s: float) -> bool:
        """Bookkeeping after an answer (the lock is held); whether it is the newest answer."""
        self.stats.last_api_answer_mono = time.monotonic()
        self.stats.results += 1
        self.stats.request_latency.add(latency_s)
        self.pacing.record_latency(latency_s)
        newest = self._last_result is None or result.frame_id > self._last_result.frame_id
        if newest:
            self._last_result = result
        self._refused_in_row = 0
        self._refusal_backoff.reset()
        self._skips.recovered()
        down_for = self.breaker.success()
        if down_for is not None:
            log.info("API %s answers again after %.1f s down", self.client.endpoint, down_for)
        self.stats.api_state, self.stats.api_down_since = "ok", None
        self._faults.recovered()
        return newest

    def _transient(self, exc: ApiTransientError, probe: bool = True) -> float:
        """429, 5xx, a timeout or no connection: count it and ask the breaker how long to wait
        (the lock is held)."""
        self.stats.transient_errors += 1
        self.stats.count_failure(exc.kind)
        self._faults.fault(str(exc))
        was_open = self.breaker.is_open
        delay = self.breaker.failure(exc.retry_after_s, probe=probe)
        if exc.status is not None:  # it answered, if only with an error
            now = time.monotonic()
            self.stats.last_api_answer_mono = now
            if exc.retry_after_s:  # and said when to come back: quiet until then is not a fault
                self.stats.api_quiet_until = now + delay
        if self.breaker.is_open:
            self.stats.api_state, self.stats.api_down_since = "down", self.breaker.opened_at
            if not was_open:
                log.warning("API %s: %d requests in a row failed; sending one probe every %.1f-%.0f s "
                            "(doubling) until it answers", self.client.endpoint, self.breaker.failures_in_row,
                            self.backoff.initial_s, self.backoff.max_s)
        else:
            self.stats.api_state = "failing"
        if delay > self.backoff.max_s:
            log.warning("API asks to wait %.0f s before the next request (Retry-After)", delay)
        return delay

    def _refused(self, exc: ApiMalformedResponse | ApiBadRequest) -> float:
        """A 400 or an answer that is not a valid response: skip this frame (the lock is held)."""
        self.stats.last_api_answer_mono = time.monotonic()
        if isinstance(exc, ApiMalformedResponse):
            self.stats.malformed += 1
            self.stats.count_failure("malformed")
        else:
            self.stats.skipped_bad_request += 1
            self.stats.count_failure(f"http {exc.status}" if exc.status else "bad request")
        self._skips.fault(str(exc))
        self._refused_in_row += 1
        delay = 0.0
        if self._refused_in_row >= self.refusals_before_backoff:
            delay = self._refusal_backoff.next_delay()
        if self.breaker.is_open:  # a probe got a broken answer: the breaker stays open, paced
            delay = max(delay, self.backoff.next_delay())
        return delay
