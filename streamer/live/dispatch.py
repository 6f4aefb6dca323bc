"""The inference worker: newest frame -> resize, encode, POST -> result in original pixels.

Request threads, up to max_in_flight of them busy at once and one more, share the work.
One idle thread at a time leads: it decides when the next request goes out (pacing by
latency, max_fps, the circuit breaker, Retry-After, the call budget and the motion gate),
publishes the results whose release time has come, takes the newest frame and makes the
request itself.  The thread whose answer comes back next leads after it.  Results go to
``NewestResults``, where a late one is counted and dropped; an early one is held until its
release time, so that results leave evenly spaced.  A call then costs its thread one wake-up
for the answer and, mostly, one that both publishes an answer and sends the next request.
"""
from __future__ import annotations

import logging
import dataclasses
import threading
import time
from dataclasses import dataclass
from collections.abc import Callable

from streamer.api.backoff import Backoff, FaultLog
from streamer.api.breaker import CircuitBreaker
from streamer.api.client import DetectionClient
from streamer.errors import ApiBadRequest, ApiMalformedResponse, ApiTransientError, StreamerError
from streamer.live.frames import DropOldestQueue, Frame, NewestResults, Result
from streamer.live.imaging import prepare_upload, scale_predictions
from streamer.live.pacing import CallBudget, MotionGate, Pacing
from streamer.api.responses import Parsed, filter_classes
from streamer.live.stats import Stats

log = logging.getLogger(__name__)

# The longest an idle thread sleeps before it looks at the stop flag again.  Each wake-up
# costs CPU (about 0.1 to 0.3 ms on a 2-core machine); ``join`` wakes every thread at once,
# so this bounds only a stop that nobody follows with a join.
IDLE_WAIT_S = 2.0

# A result due within this of a send (at most a quarter of the send interval) goes out with
# it: releases fall just after the send slots, and one wake-up then does both.
EARLY_S = 0.005


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
    """Threads ``streamer.request-N``, N from 1 to max_in_flight + 1; one of the idle ones leads.

    Each request takes the newest frame at the moment it is sent, never one already sent.
    400s and malformed answers skip the frame; 429/5xx/timeouts/refused connections go
    through a circuit breaker (see ``breaker``): Retry-After is always honoured, and after
    a few failures in a row one probe at a time is sent per backoff interval until the API
    answers.  401/402/403/404/423 record a fatal error and set the stop event.
    """

    def __init__(self, queue_: DropOldestQueue[Frame], client: DetectionClient, results: NewestResults,
                 stats: Stats, stop: threading.Event, settings: InferenceSettings,
                 backoff: Backoff | None = None, failures_to_open: int = 3,
                 publish_due: Callable[[float | None], None] | None = None):
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
        # The leader waits on _lock, the other idle threads on _followers (the same lock):
        # waking the leader never wakes them too.
        self._lock = threading.Condition()  # guards the counts below and the breaker
        self._followers = threading.Condition(self._lock)
        self._in_flight = 0
        self._leader = False  # one idle thread leads: it paces, sends and publishes on time
        self._leader_until = 0.0  # when the leader wakes by itself (monotonic)
        self._leader_in_queue = False  # it waits for a frame, on the queue's condition
        self._early_s = 0.0  # EARLY_S, or less for a short send interval (set with the latency)
        self._leading = threading.local()  # per thread: CPU mark and total while it leads
        self._waiting_for_capacity = False  # the leader waits for a request to end
        self._last_result: Result | None = None
        # A thread per request in flight, and one more to lead while they all are.
        self._threads = [threading.Thread(target=self._serve, name=f"streamer.request-{i + 1}", daemon=True)
                         for i in range(settings.max_in_flight + 1)]

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
            self._followers.notify_all()
        self.queue.wake()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def _fail(self, exc: BaseException) -> None:
        if not isinstance(exc, StreamerError):  # ours (a refused key, a full disk): one line at exit
            log.error("inference stopped by an unexpected error", exc_info=exc)
        if self.error is None:
            self.error = exc
        self.stop.set()

    # --- leading: pacing, sending and publishing on time ---
    #
    # There is no dispatcher thread.  One idle request thread at a time leads: it waits for
    # the next send (or a result's release time), publishes what is due, takes the newest
    # frame and makes the request itself.  The thread whose answer comes back next leads
    # after it.  A call then costs its thread one wake-up for the answer and, mostly, one
    # that both publishes the answer before it and sends: not four wake-ups over two threads.

    def _lead_or_follow(self) -> tuple[tuple[Frame, object] | None, float]:
        """Wait to lead, then lead until there is a request to make: (the request, or None once
        stopping; the CPU seconds spent leading, which stats count as the dispatcher's)."""
        with self._lock:
            while self._leader:
                if self.stop.is_set():
                    return None, 0.0
                self._followers.wait(IDLE_WAIT_S)
            if self.stop.is_set():
                return None, 0.0
            self._leader = True
        self._leading.cpu_mark = time.thread_time()
        self._leading.total_s = 0.0
        job = None
        try:
            job = self._lead()
        finally:
            self._count_leading()
            with self._lock:
                self._leader = False
                # Someone must lead while the requests are out: for a send due before one of
                # them ends, or for a result held for later.
                if not self.stop.is_set() and (self._in_flight < self.pacing.capacity()
                                               or self.results.next_release() is not None):
                    self._followers.notify()
        return job, self._leading.total_s

    def _count_leading(self) -> None:
        """Add the CPU this thread spent leading since the last count to stats' dispatch_cpu_s
        (counted as it goes, so the heartbeat's figure moves while one thread leads for long)."""
        mark = time.thread_time()
        spent = mark - self._leading.cpu_mark
        self._leading.cpu_mark = mark
        self._leading.total_s += spent
        self.stats.add_dispatch_cpu(spent)

    def _lead(self) -> tuple[Frame, object] | None:
        while not self.stop.is_set():
            self._count_leading()
            drained_to = self._publish_due()
            with self._lock:  # check and wait under one lock: a request ending is never missed
                if self.stop.is_set():  # seen under the lock join() notifies under: never missed
                    return None
                now = time.monotonic()
                wait_s = self._wait_s()
                release_at = self.results.next_release() if self.publish_due is not None else None
                if release_at is not None and release_at <= drained_to:
                    release_at = None  # due when publish_due ran, and still here: publishing is off
                if wait_s is None or wait_s > 0:  # None: at capacity, woken when a request ends
                    wake_at = now + (IDLE_WAIT_S if wait_s is None else min(wait_s, IDLE_WAIT_S))
                    # A result due just before the send goes out with it: one wake-up for both.
                    if release_at is not None and (wait_s is None or release_at < wake_at - self._early_s):
                        wake_at = min(wake_at, release_at)
                    self._waiting_for_capacity = wait_s is None
                    self._leader_until = wake_at
                    self._lock.wait(max(0.0, wake_at - now))
                    self._waiting_for_capacity = False
                    continue
                frame_wait_s = IDLE_WAIT_S if release_at is None else min(IDLE_WAIT_S, max(0.0, release_at - now))
                self._leader_until = now + frame_wait_s
                self._leader_in_queue = True
                wakes_seen = self.queue.wakes  # a wake() before get_newest waits is not lost
            try:
                frame = self.queue.get_newest(timeout=frame_wait_s, stop=self.stop, wakes_seen=wakes_seen)
            finally:
                with self._lock:
                    self._leader_in_queue = False
            if frame is not None:
                self._publish_due(self._early_s)  # what falls due before the next send goes now
                job = self._send(frame)
                if job is not None:
                    return job
        return None

    def _publish_due(self, early_s: float = 0.0) -> float:
        """Publish the results due by now + early_s, if any; that time.  Publishing is one of a
        call's steps, whoever does it: its CPU counts as steps, not as leading."""
        due_by = time.monotonic() + early_s
        release_at = self.results.next_release()
        if self.publish_due is None or release_at is None or release_at > due_by:
            return due_by
        cpu_from = time.thread_time()
        self.publish_due(due_by)
        spent = time.thread_time() - cpu_from
        self.stats.add_steps_cpu(spent)
        self._leading.cpu_mark += spent  # only the leader calls this: not leading, so not counted as such
        return due_by

    def _wait_s(self) -> float | None:
        """Seconds until a request may go out (0: now), None while at capacity (lock held)."""
        now = time.monotonic()
        if self.pause_until > now:
            return self.pause_until - now
        if self.breaker.is_open and self._in_flight:
            return None  # one probe at a time while the API is down
        return self.pacing.wait_s(self._in_flight)

    def _send(self, frame: Frame) -> tuple[Frame, object] | None:
        """The request to make for this frame, or None when it is skipped or its last result reused."""
        if self.budget.exhausted():  # the call this slot would have made is skipped
            with self._lock:
                self.finished_frames += 1
                self.pacing.sent()
                self.stats.skipped_budget += 1
                self.stats.last_skip_mono = time.monotonic()
            return None
        thumb = self.gate.thumbnail(frame.image) if self.gate.enabled else None
        if thumb is not None and not self.gate.worth_sending(thumb):
            self._reuse(frame)
            return None
        with self._lock:
            # While the leader waited for the frame, an answer may have paused the sending (a
            # 429, the breaker opening) or a stop come: the frame then waits, not sent.  Under
            # the lock idle() reads the queue under: it never sees the frame in neither place.
            if self.stop.is_set() or self._wait_s() != 0:
                self.queue.put_back(frame)
                return None
            self._in_flight += 1
            self.pacing.sent()
        self.budget.spend()
        return frame, thumb

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
            self._publish_due()
        finally:
            with self._lock:  # after the offer: idle() must not turn true before it lands
                self.finished_frames += 1

    # --- the request threads ---

    def _serve(self) -> None:
        cpu_mark = time.thread_time()  # this thread's CPU, less its leading, goes to stats.request_cpu_s
        try:
            led_s = 0.0
            while not self.stop.is_set():
                cpu_now = time.thread_time()
                self.stats.add_request_cpu(cpu_now - cpu_mark - led_s)  # leading counts as dispatching
                cpu_mark = cpu_now
                job, led_s = self._lead_or_follow()
                if job is None:
                    continue
                frame, thumb = job
                pause_s, release_at = 0.0, None
                steps_from = time.thread_time()
                try:
                    pause_s, release_at = self._infer(frame, thumb)
                    if release_at is not None and release_at <= time.monotonic() and self.publish_due:
                        self.publish_due()  # due already: this thread is awake, publish it
                        release_at = None
                finally:
                    self.stats.add_steps_cpu(time.thread_time() - steps_from)
                    with self._lock:
                        self._in_flight -= 1
                        self.finished_frames += 1
                        if pause_s:
                            self.pause_until = max(self.pause_until, time.monotonic() + pause_s)
                        # The leader may have to wake earlier now: for the free slot, or to
                        # publish this result on time.
                        if self._leader and (self._waiting_for_capacity or (
                                release_at is not None and release_at < self._leader_until)):
                            self._lock.notify()
                            if self._leader_in_queue:
                                self.queue.wake()
        except BaseException as exc:  # ApiFatalError, a sink that cannot write, or a bug: record, stop everything
            self._fail(exc)

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
        self._early_s = min(EARLY_S, self.pacing.interval_s() / 4)
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
