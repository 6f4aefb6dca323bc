"""The live pipeline: wires capture -> inference -> output and supervises them.

Capture and inference run in threads; output (overlay, window, publishing, recording)
runs on the calling thread, because HighGUI must.  One stop event ends everything;
every wait in every thread is bounded, and stop joins all threads against one deadline.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from streamer.backoff import Backoff
from streamer.capture import CaptureWorker
from streamer.client import DetectionClient
from streamer.display import Window
from streamer.errors import EXIT_FAILURE, EXIT_OK, StreamerError
from streamer.frames import DropOldestQueue, Frame, Latest, Result
from streamer.inference import InferenceSettings, InferenceWorker
from streamer.overlay import draw_predictions, draw_status, status_band_height
from streamer.publish import Recorder, encode_message, result_message
from streamer.stats import Stats

log = logging.getLogger(__name__)

JOIN_DEADLINE_S = 1.5  # well inside the 3 s a service manager or a user waits


@dataclass
class Outputs:
    """Everything results go to; each is optional."""

    window: Window | None = None
    sinks: tuple = ()  # objects with send(bytes) and close(): ZmqPublisher, JsonlWriter
    recorder: Recorder | None = None


class Pipeline:
    def __init__(self, source, client: DetectionClient, outputs: Outputs, settings: InferenceSettings,
                 stop: threading.Event, *, queue_size: int = 1, loop: bool = False,
                 duration_s: float | None = None, status_interval_s: float = 5.0,
                 source_backoff: Backoff | None = None, api_backoff: Backoff | None = None):
        self.stop = stop
        self.stats = Stats()
        self.outputs = outputs
        self.duration_s = duration_s
        self.status_interval_s = status_interval_s
        self._changed = threading.Event()  # set on every new frame or result
        self.queue: DropOldestQueue[Frame] = DropOldestQueue(queue_size)
        self.latest_frame: Latest[Frame] = Latest(self._changed)
        self.latest_result: Latest[Result] = Latest(self._changed)
        self.capture = CaptureWorker(source, self.queue, self.latest_frame, self.stats, stop,
                                     loop=loop, backoff=source_backoff)
        self.inference = InferenceWorker(self.queue, client, self.latest_result, self.stats, stop,
                                         settings, backoff=api_backoff)
        self.user_quit = False
        self._published_version = 0

    def run(self) -> int:
        """Run until stopped (signal, q/Esc, duration, end of file or a fatal error); exit code."""
        self.capture.start()
        self.inference.start()
        try:
            self._output_loop()
        finally:
            self.stop.set()
            self._publish_last()
            self._shutdown()
        return self._exit_code()

    def _exit_code(self) -> int:
        for worker in (self.inference, self.capture):
            if worker.error is not None:
                if isinstance(worker.error, StreamerError):
                    raise worker.error
                return EXIT_FAILURE
        return EXIT_OK

    def _output_loop(self) -> None:
        started = last_status = time.monotonic()
        shown_frame = 0
        window = self.outputs.window
        while not self.stop.is_set():
            self._changed.wait(0.02 if window else 0.1)
            self._changed.clear()
            now = time.monotonic()
            version, result = self.latest_result.get()
            if version != self._published_version and result is not None:
                self._published_version = version
                self._publish(result)
            frame_version, frame = self.latest_frame.get()
            if frame is not None and frame_version != shown_frame:
                shown_frame = frame_version
                if window or self.outputs.recorder:
                    self._show(frame, result, now)
            if window and not window.poll():
                self.user_quit = True
                break
            if self.duration_s is not None and now - started >= self.duration_s:
                break
            if self.capture.finished.is_set() and self._nothing_left_to_infer():
                break
            if now - last_status >= self.status_interval_s:
                last_status = now
                log.info("%s", self.status_line(result, now))

    def _nothing_left_to_infer(self) -> bool:
        """Once a file has ended: its last frame was inferred, or the API asked for a wait
        longer than our backoff cap (Retry-After), which a finished file does not sit out."""
        if self.inference.idle():
            return True
        if self.inference.paused_beyond_backoff():
            log.warning("the source has ended and the API asks for a long wait: stopping without "
                        "the last %d frame(s)", self.queue.pending())
            return True
        return False

    def status_line(self, result: Result | None, now: float) -> str:
        age_ms = (now - result.captured_mono) * 1000 if result is not None else None
        return self.stats.line(self.queue.dropped, age_ms)

    def _publish_last(self) -> None:
        """A result that arrived after the output loop's last pass is still published."""
        version, result = self.latest_result.get()
        if version != self._published_version and result is not None:
            self._published_version = version
            try:
                self._publish(result)
            except Exception:  # a sink failing at exit must not hide the real exit status
                log.exception("could not publish the last result")

    def _publish(self, result: Result) -> None:
        if not self.outputs.sinks:
            return
        payload = encode_message(result_message(result))
        for sink in self.outputs.sinks:
            sink.send(payload)
        self.stats.published += 1

    def _show(self, frame: Frame, result: Result | None, now: float) -> None:
        image = frame.image.copy()  # the capture thread's frame is shared: draw on a copy
        if result is not None:
            draw_predictions(image, result.predictions, min_y=status_band_height(image))
        draw_status(image, self.status_line(result, now))
        if self.outputs.recorder:
            self.outputs.recorder.write(image, frame.captured_mono)
        if self.outputs.window and not self.outputs.window.show(image):
            self.user_quit = True
            self.stop.set()

    def _shutdown(self) -> None:
        deadline = time.monotonic() + JOIN_DEADLINE_S
        stragglers = [name for name, worker in (("capture", self.capture), ("inference", self.inference))
                      if not worker.join(max(0.0, deadline - time.monotonic()))]
        if stragglers:
            # They are daemon threads blocked in a bounded call (HTTP or camera timeout);
            # the process exits without waiting for them.
            log.debug("threads still finishing a bounded call at exit: %s", ", ".join(stragglers))
        for closer in (self.outputs.window, self.outputs.recorder, *self.outputs.sinks):
            if closer is not None:
                try:
                    closer.close()
                except Exception:  # closing must never stop the others from closing
                    log.exception("error while closing %r", closer)
        s = self.stats
        log.info("stopped: %d frames read, %d dropped, %d source reconnects, %d requests, %d results, "
                 "%d published, %d transient API errors, %d skipped (400), %d malformed", s.frames_read,
                 self.queue.dropped, s.source_reconnects, s.requests, s.results, s.published,
                 s.transient_errors, s.skipped_bad_request, s.malformed)
