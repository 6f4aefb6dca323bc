"""The inference worker: newest frame -> resize, encode, POST -> result in original pixels."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from streamer.backoff import Backoff, FaultLog
from streamer.breaker import CircuitBreaker
from streamer.client import DetectionClient
from streamer.errors import ApiBadRequest, ApiFatalError, ApiMalformedResponse, ApiTransientError
from streamer.frames import DropOldestQueue, Frame, Latest, Result
from streamer.imaging import prepare_upload, scale_predictions
from streamer.predictions import Parsed, filter_classes
from streamer.stats import Stats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InferenceSettings:
    max_side: int = 640
    jpeg_quality: int = 80
    classes: tuple[str, ...] = ()


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
    """Thread ``streamer.inference``: one request at a time, always on the newest frame.

    400s and malformed answers skip the frame; 429/5xx/timeouts/refused connections go
    through a circuit breaker (see ``breaker``): Retry-After is always honoured, and after
    a few failures in a row one probe is sent per backoff interval until the API answers.
    401/402/403/404/423 record a fatal error and set the stop event.
    """

    def __init__(self, queue: DropOldestQueue[Frame], client: DetectionClient, results: Latest[Result],
                 stats: Stats, stop: threading.Event, settings: InferenceSettings,
                 backoff: Backoff | None = None, failures_to_open: int = 3):
        self.queue = queue
        self.client = client
        self.results = results
        self.stats = stats
        self.stop = stop
        self.settings = settings
        self.backoff = backoff or Backoff(0.5, 30.0)
        self.breaker = CircuitBreaker(self.backoff, failures_to_open)
        self._refusal_backoff = Backoff(self.backoff.initial_s, self.backoff.max_s)
        self.error: BaseException | None = None
        self.finished_frames = 0  # frames taken from the queue and fully handled
        self.pause_until = 0.0  # monotonic end of a backoff pause in progress, else 0
        self._faults = FaultLog(log, f"API {client.endpoint}")
        self._skips = FaultLog(log, "API refused a frame", action="frame skipped")
        self._refused_in_row = 0
        # After this many refused frames in a row the next ones are paced by the backoff:
        # a 400 that every frame gets (e.g. a missing key) must not hammer the API.
        self.refusals_before_backoff = 3
        self._thread = threading.Thread(target=self._run, name="streamer.inference", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def idle(self) -> bool:
        """No frame waiting and none being handled (the queue counts what it handed out)."""
        return self.queue.pending() == 0 and self.queue.taken == self.finished_frames

    def paused_beyond_backoff(self) -> bool:
        """Pausing longer than our own backoff cap: a server's long Retry-After."""
        return self.pause_until - time.monotonic() > self.backoff.max_s

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                frame = self.queue.get_newest(timeout=0.2)
                if frame is None:
                    continue
                try:
                    pause_s = self._infer(frame)
                finally:
                    self.finished_frames += 1
                if pause_s:
                    # The next frame taken after the pause is the newest one.
                    self.pause_until = time.monotonic() + pause_s
                    self.stop.wait(pause_s)
                    self.pause_until = 0.0
        except ApiFatalError as exc:
            self.error = exc
            self.stop.set()
        except BaseException as exc:  # fail fast: record, stop everything
            log.exception("inference stopped by an unexpected error")
            self.error = exc
            self.stop.set()

    def _infer(self, frame: Frame) -> float:
        """Handle one frame; the seconds to pause before the next (0 after a success)."""
        settings = self.settings
        upload = prepare_upload(frame.image, settings.max_side, settings.jpeg_quality)
        sent_at = time.time()
        self.stats.requests += 1
        self.breaker.before_request()
        try:
            parsed = self.client.infer(upload.body)
        except ApiTransientError as exc:
            return self._transient(exc)
        except (ApiMalformedResponse, ApiBadRequest) as exc:
            return self._refused(exc)
        received_at = time.time()
        self.stats.last_api_answer_mono = time.monotonic()
        result = make_result(frame, parsed, upload, self.client.model, sent_at, received_at, settings.classes)
        self.results.set(result)
        self.stats.results += 1
        self.stats.inference_rate.tick()
        self._refused_in_row = 0
        self._refusal_backoff.reset()
        self._skips.recovered()
        down_for = self.breaker.success()
        if down_for is not None:
            log.info("API %s answers again after %.1f s down", self.client.endpoint, down_for)
        self.stats.api_state, self.stats.api_down_since = "ok", None
        self._faults.recovered()
        return 0.0

    def _transient(self, exc: ApiTransientError) -> float:
        """429, 5xx, a timeout or no connection: count it and ask the breaker how long to wait."""
        self.stats.transient_errors += 1
        self.stats.count_failure(exc.kind)
        self._faults.fault(str(exc))
        was_open = self.breaker.is_open
        delay = self.breaker.failure(exc.retry_after_s)
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
        """A 400 or an answer that is not a valid response: skip this frame."""
        self.stats.last_api_answer_mono = time.monotonic()
        if isinstance(exc, ApiMalformedResponse):
            self.stats.malformed += 1
            self.stats.count_failure("malformed")
        else:
            self.stats.skipped_bad_request += 1
            self.stats.count_failure(f"http {exc.status}" if exc.status else "bad request")
        self._skips.fault(str(exc))
        self._refused_in_row += 1
        if self._refused_in_row >= self.refusals_before_backoff:
            return self._refusal_backoff.next_delay()
        return 0.0
