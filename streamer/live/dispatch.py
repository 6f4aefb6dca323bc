"""The inference worker: newest frame -> resize, encode, POST -> result in original pixels.

How a frame becomes a result, in five lines:
1. The ``dispatch`` thread waits until a request may go out (pacing, max_fps, Retry-After,
   the circuit breaker, the call budget) and a slot is free, then takes the newest frame.
2. It hands the frame to an idle ``request-N`` thread, which resizes, encodes and POSTs it.
3. The answer becomes a Result in the frame's own pixels, handed to the publisher with a
   release time: newest wins, and an early answer is held until then, so results leave evenly.
4. The request thread goes back to work at once: the publisher stage releases the result.
5. A request unanswered for ``hang_after_s`` is *hung*: it no longer takes a slot (at most
   2 x max_in_flight of them), counts as a failure, and its answer is dropped if it ever comes.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from streamer.api.breaker import UNSENT_PROBE_S, CircuitBreaker
from streamer.api.client import DetectionClient
from streamer.errors import ApiBadRequest, ApiMalformedResponse, ApiTransientError
from streamer.imaging import prepare_upload
from streamer.live.pacing import CallBudget, MotionGate, Pacing
from streamer.live.publisher import Publisher
from streamer.queues import DropOldestQueue
from streamer.retry import Backoff, FaultLog
from streamer.stats import Stats
from streamer.threads import IDLE_WAIT_S, join_all, named_thread, record_failure
from streamer.types import Frame, Result

log = logging.getLogger(__name__)

HUNG_PER_SLOT = 2  # hung requests allowed per request slot (max_in_flight)
REFUSAL_BACKOFF_MAX_S = 2.0  # refused frames (400, HTML) in a row: the slowest resend pace


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


class _Deferred(list[tuple[int, tuple]]):
    """A logger stand-in for code that runs under the worker's lock: (level, args) lines are
    kept, and written once the lock is released, so a slow or blocked stderr never holds it."""

    def warning(self, *args: object) -> None:
        self.append((logging.WARNING, args))

    def info(self, *args: object) -> None:
        self.append((logging.INFO, args))


@dataclass(eq=False)  # each one is itself: hashed and compared by identity
class _Request:
    """One request handed from the dispatcher to a request thread."""

    frame: Frame
    thumb: object  # the motion gate's thumbnail, or None
    probe: bool  # sent while the breaker was open
    timeout_s: float | None  # None: api.timeout_s; shorter while requests are failing
    sent_mono: float = 0.0
    hung: bool = False


class InferenceWorker:
    """Thread ``dispatch`` and threads ``request-1`` ... ``request-K`` (K: the requests that
    can be outstanding, hung ones included).

    Each request takes the newest frame at the moment it is sent, never one already sent.
    400s and malformed answers skip the frame; 429/5xx/timeouts/refused connections and hung
    requests go through a circuit breaker (see ``breaker``): Retry-After is always honoured,
    and after a few failures in a row one probe at a time is sent per backoff interval until
    the API answers.  401/402/403/404/423 record a fatal error and set the stop event.
    """

    def __init__(
        self,
        queue_: DropOldestQueue[Frame],
        client: DetectionClient,
        publisher: Publisher,
        stats: Stats,
        stop: threading.Event,
        settings: InferenceSettings,
        backoff: Backoff | None = None,
        failures_to_open: int = 3,
    ):
        self.queue = queue_
        self.client = client
        self.publisher = publisher
        self.stats = stats
        self.stop = stop
        self.settings = settings
        self.backoff = backoff or Backoff(0.5, 30.0)
        self.breaker = CircuitBreaker(self.backoff, failures_to_open)
        self.pacing = Pacing(settings.max_in_flight, settings.max_fps)
        self.budget = CallBudget(settings.budget_calls, settings.budget_period)
        self.gate = MotionGate(settings.min_change)
        refusal_max_s = min(self.backoff.max_s, REFUSAL_BACKOFF_MAX_S)  # api.backoff_initial_s may be above it
        self._refusal_backoff = Backoff(min(self.backoff.initial_s, refusal_max_s), refusal_max_s)
        self.error: BaseException | None = None
        self.finished_frames = 0  # frames taken from the queue and fully handled
        self.pause_until = 0.0  # monotonic end of the last pause (backoff, Retry-After); past: none
        self.max_hung = HUNG_PER_SLOT * settings.max_in_flight
        self._log = _Deferred()  # under the lock, log through this
        self._faults = FaultLog(self._log, f"API {client.endpoint}")
        self._skips = FaultLog(self._log, "API refused a frame", action="frame skipped")
        self._refused_in_row = 0
        # After this many refused frames in a row the next ones are paced by the backoff:
        # a 400 that every frame gets (e.g. a missing key) must not hammer the API.
        self.refusals_before_backoff = 3
        self._lock = threading.Condition()  # guards what follows; request threads notify the dispatcher
        self._outstanding: set[_Request] = set()
        self._waiting_for_slot = False  # the dispatcher waits for a request to end
        self._last_result: Result | None = None
        self._jobs: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._threads = [named_thread("dispatch", self._guard, self._dispatch)] + [
            named_thread(f"request-{i + 1}", self._guard, self._serve)
            for i in range(settings.max_in_flight + self.max_hung)  # hung requests hold a thread too
        ]

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the lock; the lines logged meanwhile are written after it is released."""
        with self._lock:
            yield
            lines = self._log.copy()
            self._log.clear()
        for level, args in lines:
            log.log(level, *args)

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
        with self._lock:
            self._lock.notify_all()
        self.queue.wake()
        for _ in self._threads:
            self._jobs.put(None)
        return not join_all(self._threads, time.monotonic() + timeout)

    def _guard(self, loop: Callable[[], None]) -> None:
        """Run a thread's loop; an error it does not handle (a refused key, a full disk, a bug)
        is recorded and stops everything."""
        try:
            loop()
        except BaseException as exc:
            record_failure(exc, self, self.stop, "inference", log)

    # --- the dispatch thread ---

    def _dispatch(self) -> None:
        while not self.stop.is_set():
            with self._locked():
                wait_s = self._wait_s()
                if wait_s != 0:  # None: every slot taken; a request that ends wakes it then
                    self._waiting_for_slot = wait_s is None
                    self._lock.wait(min(IDLE_WAIT_S, self._next_hang_check_s(), wait_s or IDLE_WAIT_S))
                    self._waiting_for_slot = False
                    continue
            frame = self.queue.get_newest(timeout=IDLE_WAIT_S, stop=self.stop)
            if frame is not None:
                self._send(frame)

    def _wait_s(self) -> float | None:
        """Seconds until a request may go out (0: now), None while every slot is taken (lock held)."""
        now = time.monotonic()
        self._mark_hung(now)
        if self.pause_until > now:
            return self.pause_until - now
        hung = sum(r.hung for r in self._outstanding)
        counted = len(self._outstanding) - hung
        # None too while the API is down and a probe is out: one probe at a time.
        return None if hung >= self.max_hung or (self.breaker.is_open and counted) else self.pacing.wait_s(counted)

    def _next_hang_check_s(self) -> float:
        waiting = [r.sent_mono for r in self._outstanding if not r.hung]
        return max(0.01, min(waiting) + self.pacing.hang_after_s() - time.monotonic()) if waiting else IDLE_WAIT_S

    def _mark_hung(self, now: float) -> None:
        """Requests out longer than hang_after_s stop taking a slot, and count as failures
        (without moving the backoff on: the next probe goes out as soon as one hangs)."""
        limit = self.pacing.hang_after_s()
        for request in self._outstanding:
            if not request.hung and now - request.sent_mono > limit:
                request.hung = True
                self.stats.hung_requests += 1
                self._transient(
                    ApiTransientError(f"{self.client.endpoint} has not answered for {limit:.1f} s", kind="hung"),
                    probe=False,
                )

    def _send(self, frame: Frame) -> None:
        """Hand the frame to a request thread, unless the budget or the motion gate skip it."""
        exhausted = self.budget.exhausted()  # then the call this slot would have made is skipped
        thumb = self.gate.thumbnail(frame.image) if self.gate.enabled and not exhausted else None
        if exhausted or (thumb is not None and not self.gate.worth_sending(thumb)):
            self._skip(frame, reuse=not exhausted)
            return
        with self._locked():
            # While the dispatcher waited for the frame, an answer may have paused the sending
            # (a 429, the breaker opening) or a stop come: the frame then waits, not sent.
            if self.stop.is_set() or self._wait_s() != 0:
                self.queue.put_back(frame)
                return
            # While requests fail, the next one waits no longer than a hung one is waited for:
            # probes of an API that hangs then end by themselves, and never pile up.
            request = _Request(
                frame,
                thumb,
                probe=self.breaker.is_open,
                timeout_s=self.pacing.hang_after_s() if self.breaker.failures_in_row else None,
                sent_mono=time.monotonic(),
            )
            self._outstanding.add(request)
            self.pacing.sent()
        self.budget.spend()
        self._jobs.put(request)

    def _skip(self, frame: Frame, reuse: bool) -> None:
        """The slot passes without a call: the budget is spent, or (``reuse``) the frame hardly
        differs from the last one answered, whose result is then republished.

        Not while a request is out: its answer (for an older frame) would then be dropped as
        late.  The gate's reference is the frame of ``_last_result``, set only when an answer
        arrives, so the boxes republished always belong to the scene."""
        with self._lock:
            self.pacing.sent()
            if reuse:
                self.stats.skipped_no_change += 1
            else:
                self.stats.skipped_budget += 1
            self.stats.last_skip_mono = time.monotonic()
            last = self._last_result if reuse and not self._outstanding else None
        try:
            if last is not None:
                self.publisher.offer(last.for_frame(frame, reused=True))
        finally:
            with self._lock:  # after the offer: idle() must not turn true before it lands
                self.finished_frames += 1

    # --- the request threads ---

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                request = self._jobs.get(timeout=5 * IDLE_WAIT_S)  # join() wakes them at once
            except queue.Empty:
                continue
            if request is None:  # join() wakes the threads with these
                return
            try:
                self._infer(request)
            finally:
                with self._lock:
                    self._outstanding.remove(request)
                    self.finished_frames += 1
                    if self._waiting_for_slot:  # otherwise it wakes at its own time: no wake-up to spare
                        self._lock.notify()

    def _infer(self, request: _Request) -> None:
        """Make one request and hand its result to the publisher."""
        settings, frame = self.settings, request.frame
        upload = prepare_upload(frame.image, settings.max_side, settings.jpeg_quality)
        sent_at = time.time()
        with self._lock:
            self.stats.requests += 1
            self.stats.send_rate.tick()
            self.stats.bytes_sent += len(upload.body)
        try:
            parsed = self.client.infer(upload.body, read_timeout_s=request.timeout_s)
        except (ApiTransientError, ApiMalformedResponse, ApiBadRequest) as exc:
            with self._locked():
                if request.hung:  # a hung request was counted as a failure already
                    return
                if isinstance(exc, ApiTransientError):
                    # A short wait that ran out is a hang, not a probe the API failed: no longer backoff.
                    self._transient(
                        exc, request.probe and not (exc.kind == "timeout" and request.timeout_s is not None)
                    )
                else:
                    self._refused(exc)
        else:
            result = parsed.filtered(settings.classes).result_for(
                frame, (upload.sent_width, upload.sent_height), self.client.model, sent_at, time.time()
            )
            self._answered(request, result)

    def _answered(self, request: _Request, result: Result) -> None:
        """Bookkeeping after a 200, and the result to the publisher, with its release time."""
        latency_s = time.monotonic() - request.sent_mono
        with self._locked():
            if request.hung:  # given up on: dropped as late
                self.publisher.results.late += 1
                return
            usual_s = self.pacing.latency_s  # before this answer joins the estimate
            self._succeeded(result, latency_s, request.thumb)
        # An early answer waits until the usual latency has passed (holding it by at most
        # half its own latency), so that results go out at the even pace they were sent at.
        spread = self.settings.max_in_flight > 1 and usual_s is not None
        self.publisher.offer(result, request.sent_mono + min(usual_s, 1.5 * latency_s) if spread else 0.0)
        self.stats.inference_rate.tick()

    def _succeeded(self, result: Result, latency_s: float, thumb: object) -> None:
        """Bookkeeping after an answer (the lock is held)."""
        self.stats.last_api_answer_mono = time.monotonic()
        self.stats.results += 1
        self.stats.request_latency.add(latency_s)
        self.pacing.record_latency(latency_s)
        if self._last_result is None or result.frame_id > self._last_result.frame_id:  # the newest answer
            self._last_result = result
            self.gate.sent(thumb)  # the gate compares later frames with this answered one
        self._refused_in_row = 0
        self._refusal_backoff.reset()
        self._skips.recovered()
        down_for = self.breaker.success()
        if down_for is not None:
            self._log.info("API %s answers again after %.1f s down", self.client.endpoint, down_for)
        self.stats.api_state, self.stats.api_down_since = "ok", None
        self._faults.recovered()

    def _transient(self, exc: ApiTransientError, probe: bool = True) -> None:
        """429, 5xx, a timeout, no connection or a hung request: count it and pause sending for
        as long as the breaker says (the lock is held)."""
        self.stats.api_transient_errors += 1
        self.stats.count_failure(exc.kind)
        self._faults.fault(str(exc))
        was_open = self.breaker.is_open
        delay = self.breaker.failure(exc.retry_after_s, probe=probe, unsent=exc.unsent)
        now = time.monotonic()
        self.pause_until = max(self.pause_until, now + delay)
        if exc.status is not None:  # it answered, if only with an error
            self.stats.last_api_answer_mono = now
            if exc.retry_after_s:  # and said when to come back: quiet until then is not a fault
                self.stats.api_quiet_until = now + delay
        # While the breaker is closed its opened_at is None, as api_down_since already is.
        self.stats.api_state = "down" if self.breaker.is_open else "failing"
        self.stats.api_down_since = self.breaker.opened_at
        if self.breaker.is_open and not was_open:
            self._log.warning(
                "API %s: %d requests in a row failed; sending one probe every %.1f-%.0f s "
                "(doubling) until it answers, or every %.0f s while no connection can be made",
                self.client.endpoint,
                self.breaker.failures_in_row,
                self.backoff.initial_s,
                self.backoff.max_s,
                UNSENT_PROBE_S,
            )
        if delay > self.backoff.max_s:
            self._log.warning("API asks to wait %.0f s before the next request (Retry-After)", delay)

    def _refused(self, exc: ApiMalformedResponse | ApiBadRequest) -> None:
        """A 400 or an answer that is not a valid response: skip this frame, and after a few in a
        row pause sending by a backoff (the lock is held)."""
        self.stats.last_api_answer_mono = time.monotonic()
        if isinstance(exc, ApiMalformedResponse):
            self.stats.api_malformed += 1
            self.stats.count_failure("malformed")
        else:
            self.stats.api_skipped_bad_request += 1
            self.stats.count_failure(f"http {exc.status}" if exc.status else "bad request")
        self._skips.fault(str(exc))
        self._refused_in_row += 1
        delay = self._refusal_backoff.next_delay() if self._refused_in_row >= self.refusals_before_backoff else 0.0
        if self.breaker.is_open:  # a probe got a broken answer: the breaker stays open, paced
            delay = max(delay, self.backoff.next_delay())
        self.pause_until = max(self.pause_until, time.monotonic() + delay)
