"""The live pipeline: wires capture -> inference -> output and supervises them.

Capture and inference run in threads; output (overlay, window, publishing, recording)
runs on the calling thread, because HighGUI must.  One stop event ends everything;
every wait in every thread is bounded, and stop joins all threads against one deadline.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace

from streamer.api.backoff import Backoff
from streamer.api.client import DetectionClient
from streamer.errors import EXIT_FAILURE, EXIT_OK, StreamerError
from streamer.live.dispatch import InferenceSettings, InferenceWorker
from streamer.live.frames import DropOldestQueue, Frame, Latest, NewestResults, Result
from streamer.live.stats import Stats
from streamer.outputs.jsonl import JsonlWriter
from streamer.outputs.message import encode_message, result_message, status_message
from streamer.outputs.notify import SystemdNotifier
from streamer.outputs.overlay import draw_notice, draw_predictions, draw_status, status_band_height
from streamer.outputs.recorder import Recorder
from streamer.outputs.window import Window
from streamer.sources.capture import CaptureWorker

log = logging.getLogger(__name__)

JOIN_DEADLINE_S = 1.5  # well inside the 3 s a service manager or a user waits
STALE_AFTER_S = 3.0  # a result older than this is marked stale on the preview
# With no window the output loop has no frames to draw and does not publish either (the
# request threads do): it wakes for a stop at once, for heartbeats when they are due, and
# otherwise this often (each wake-up costs CPU), to check for a stalled source ...
IDLE_WAKE_S = 1.0
FILE_WAKE_S = 0.25  # ... or this often while a file plays, to see its end soon after


@dataclass(frozen=True)
class Supervision:
    """How the pipeline watches its workers and tells the outside world."""

    stall_timeout_s: float = 10.0
    open_timeout_s: float = 5.0
    probe_after_failures: int = 3
    status_interval_s: float = 5.0
    heartbeat_s: float = 2.0


@dataclass
class Outputs:
    """Everything results go to; each is optional."""

    window: Window | None = None
    # Objects with send(bytes) for each detections message and close(); those that also
    # have send_status(bytes) get the heartbeats.  Neither call may block.
    sinks: tuple = ()
    recorder: Recorder | None = None


class Pipeline:
    def __init__(
        self,
        source,
        client: DetectionClient,
        outputs: Outputs,
        settings: InferenceSettings,
        stop: threading.Event,
        *,
        queue_size: int = 1,
        loop: bool = False,
        duration_s: float | None = None,
        supervision: Supervision | None = None,
        source_backoff: Backoff | None = None,
        api_backoff: Backoff | None = None,
        notifier: SystemdNotifier | None = None,
        name: str | None = None,
    ):
        self.stop = stop
        self.stats = Stats()
        self.outputs = outputs
        self.duration_s = duration_s
        self.supervision = sup = supervision or Supervision()
        self.notifier = notifier
        self.source_name = source.name
        self.name = name  # the camera's name in messages; None: made from the source
        self._changed = threading.Event()  # set on every frame, if frames are drawn
        self.queue: DropOldestQueue[Frame] = DropOldestQueue(queue_size)
        # Headless and not recording, frames are not drawn: the output loop need not wake for them.
        self.draws = outputs.window is not None or outputs.recorder is not None
        self.latest_frame: Latest[Frame] = Latest(self._changed if self.draws else None)
        # Results are published by the request threads (whichever is awake at a result's
        # release time), and by the output loop as it passes: in release order.
        self.results = NewestResults()
        self._publish_lock = threading.Lock()
        self._publishing = True  # False once the sinks are about to close
        self.capture = CaptureWorker(
            source,
            self.queue,
            self.latest_frame,
            self.stats,
            stop,
            loop=loop,
            backoff=source_backoff,
            stall_timeout_s=sup.stall_timeout_s,
            open_timeout_s=sup.open_timeout_s,
        )
        self.inference = InferenceWorker(
            self.queue,
            client,
            self.results,
            self.stats,
            stop,
            settings,
            backoff=api_backoff,
            failures_to_open=sup.probe_after_failures,
            publish_due=self.publish_due,
        )
        self.user_quit = False
        self._last_heartbeat = self._last_watchdog = float("-inf")

    def run(self) -> int:
        """Run until stopped (signal, q/Esc, duration, end of file or a fatal error); exit code."""
        self.capture.start()
        self.inference.start()
        try:
            self._output_loop()
        except BaseException:
            self._close(loop_failed=True)
            raise
        last_error = self._close(loop_failed=False)
        code = self._exit_code()
        if last_error is not None:
            raise last_error
        return code

    def _close(self, loop_failed: bool) -> StreamerError | None:
        """Stop, publish the last results and shut down.  Streamer's own error from publishing
        them (a full disk) is returned for run() to raise, unless another error ends the run:
        then it is logged, so that it is still said."""
        self.stop.set()
        error = self._publish_last()
        self._shutdown()
        if error is not None and (loop_failed or any(w.error is not None for w in (self.inference, self.capture))):
            log.error("%s", error)
            return None
        return error

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
            if window:
                self._changed.wait(0.02)
                self._changed.clear()
            elif self.draws:  # a recorder: frames wake it; without frames, look often for a stop
                self._changed.wait(min(FILE_WAKE_S, self._idle_timeout(started)))
                self._changed.clear()
            else:  # nothing to draw: sleep until a stop, or the next thing due
                self.stop.wait(self._idle_timeout(started))
            now = time.monotonic()
            self.publish_due(now)
            self.stats.late_results = self.results.late
            result = self.results.latest()
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
            self.capture.check_stall(now)
            self._tell_outside(result, now)
            if now - last_status >= self.supervision.status_interval_s:
                last_status = now
                line = self.status_line(result, now)
                log.info("%s", line)
                if len(self.stats.request_latency):
                    log.info("latency: %s", self.stats.latency_text())
                if self.notifier is not None:
                    self.notifier.status(line)

    def _idle_timeout(self, started: float) -> float:
        """How long a headless loop may sleep: until the next heartbeat, watchdog ping or the
        end of --duration, and at most IDLE_WAKE_S (a quarter of the stall timeout if shorter);
        FILE_WAKE_S while a file plays, and briefly once it has ended (its last answer ends the run)."""
        if self.capture.finished.is_set():
            return 0.1
        now = time.monotonic()
        file_ends = self.capture.source.is_file and not self.capture.loop
        due = [
            FILE_WAKE_S if file_ends else IDLE_WAKE_S,
            self.supervision.stall_timeout_s / 4,
            self._last_heartbeat + self.supervision.heartbeat_s - now,
        ]
        if self.duration_s is not None:
            due.append(started + self.duration_s - now)
        window = self.notifier.watchdog_interval_s if self.notifier is not None else None
        if window and self.notifier.is_ready:  # the next ping; while unhealthy, look again soon
            due.append(max(self._last_watchdog + window / 4 - now, window / 16))
        return max(0.001, min(due))

    def _tell_outside(self, result: Result | None, now: float) -> None:
        """Heartbeats on the feed, and systemd's READY=1 and watchdog pings."""
        if now - self._last_heartbeat >= self.supervision.heartbeat_s:
            self._last_heartbeat = now
            self._heartbeat("running", now)
        notifier = self.notifier
        if notifier is None or not notifier.enabled:
            return
        s = self.stats
        if not notifier.is_ready and s.last_frame_mono is not None and s.last_api_answer_mono is not None:
            notifier.ready(self.status_line(result, now))
        window = notifier.watchdog_interval_s
        if window and notifier.is_ready and now - self._last_watchdog >= window / 4 and self.healthy(now, window):
            self._last_watchdog = now
            notifier.watchdog()

    def healthy(self, now: float, window_s: float) -> bool:
        """Frames are flowing and the API answered within the window.  A wait the API asked
        for with Retry-After, and calls the motion gate or the call budget chose not to make,
        count as answers: sitting those out is not a fault."""
        s = self.stats
        frames_ok = s.last_frame_mono is not None and now - s.last_frame_mono < window_s
        api_ok = s.last_api_answer_mono is not None and (
            now - s.last_api_answer_mono < window_s
            or now < s.api_quiet_until + window_s
            or (s.last_skip_mono is not None and now - s.last_skip_mono < window_s)
        )
        return frames_ok and api_ok

    def status(self, state: str = "running", now: float | None = None) -> dict:
        """The heartbeat message: what streamer is doing now."""
        self.stats.jsonl_dropped = sum(s.dropped for s in self.outputs.sinks if isinstance(s, JsonlWriter))
        self.stats.mqtt_dropped = sum(getattr(s, "mqtt_dropped", 0) for s in self.outputs.sinks)
        now = time.monotonic() if now is None else now
        latest = self.results.latest()
        return status_message(self.source_name, state, self.stats, self.queue.dropped, now, latest, name=self.name)

    def _heartbeat(self, state: str, now: float) -> None:
        sinks = [sink for sink in self.outputs.sinks if hasattr(sink, "send_status")]
        if sinks:
            payload = encode_message(self.status(state, now))
            for sink in sinks:
                sink.send_status(payload)

    def _nothing_left_to_infer(self) -> bool:
        """Once a file has ended: its last frame was inferred, or the API asked for a wait
        longer than our backoff cap (Retry-After), which a finished file does not sit out."""
        if self.inference.idle():
            return True
        if self.inference.paused_beyond_backoff():
            log.warning(
                "the source has ended and the API asks for a long wait: stopping without the last %d frame(s)",
                self.queue.pending(),
            )
            return True
        return False

    def status_line(self, result: Result | None, now: float) -> str:
        age_ms = (now - result.captured_mono) * 1000 if result is not None else None
        return self.stats.line(self.queue.dropped, age_ms)

    def _publish_last(self) -> StreamerError | None:
        """Results still held back (or arrived after the output loop's last pass) are published;
        streamer's own error if that failed (a full disk), for run() to raise after the shutdown."""
        error = None
        try:
            self.publish_due(float("inf"))
            for sink in self.outputs.sinks:
                if isinstance(sink, JsonlWriter):
                    sink.flush()
        except StreamerError as exc:  # one line at exit, like the same error while running
            error = exc
        except Exception:  # a sink failing at exit must not hide the real exit status
            log.exception("could not publish the last results")
        self.stats.late_results = self.results.late
        return error

    def publish_due(self, now: float | None = None) -> None:
        """Publish the results whose release time has come, in order; any thread may call it."""
        with self._publish_lock:
            if not self._publishing:
                return
            for result in self.results.drain(time.monotonic() if now is None else now):
                self._publish(result)

    def _publish(self, result: Result) -> None:
        published_at = time.time()
        if not result.reused:
            self.stats.result_age.add(published_at - result.captured_at)
        if not self.outputs.sinks:
            return
        payload = encode_message(result_message(result, published_at, self.name))
        for sink in self.outputs.sinks:
            sink.send(payload)
        self.stats.published += 1

    def annotated(self, raw: bool = False) -> Frame | None:
        """The newest frame with the newest result drawn on it, as the preview shows it (a
        copy: any thread may call this); ``raw``: without the drawing.  None before a frame."""
        _, frame = self.latest_frame.get()
        if frame is None or raw:
            return frame
        return replace(frame, image=self._draw(frame, self.results.latest(), time.monotonic()))

    def _draw(self, frame: Frame, result: Result | None, now: float):
        image = frame.image.copy()  # the capture thread's frame is shared: draw on a copy
        band = status_band_height(image)
        if result is not None:  # the source may have changed size (a camera back at another resolution)
            draw_predictions(image, result.rescaled_to(frame.width, frame.height), min_y=band)
            age_s = now - result.captured_mono
            if self.stats.api_state == "down" or age_s > STALE_AFTER_S:
                why = (
                    f": {self.stats.api_text(now)} ({self.stats.failures_text()})"
                    if self.stats.api_state == "down"
                    else ""
                )
                draw_notice(image, f"STALE: last result {age_s:.1f} s old{why}", band)
        draw_status(image, self.status_line(result, now))
        return image

    def _show(self, frame: Frame, result: Result | None, now: float) -> None:
        image = self._draw(frame, result, now)
        if self.outputs.recorder:
            self.outputs.recorder.write(image, frame.captured_mono)
        if self.outputs.window and not self.outputs.window.show(image):
            self.user_quit = True
            self.stop.set()

    def _shutdown(self) -> None:
        if self.notifier is not None:
            self.notifier.stopping()
        deadline = time.monotonic() + JOIN_DEADLINE_S
        stragglers = [
            name
            for name, worker in (("capture", self.capture), ("inference", self.inference))
            if not worker.join(max(0.0, deadline - time.monotonic()))
        ]
        if stragglers:
            # They are daemon threads blocked in a bounded call (HTTP or camera timeout);
            # the process exits without waiting for them.
            log.debug("threads still finishing a bounded call at exit: %s", ", ".join(stragglers))
        try:
            self._heartbeat("stopped", time.monotonic())
        except Exception:  # a sink failing at exit must not hide the real exit status
            log.exception("could not send the last heartbeat")
        with self._publish_lock:  # a request thread still finishing must not write to closed sinks
            self._publishing = False
        for closer in (self.outputs.window, self.outputs.recorder, *self.outputs.sinks, self.notifier):
            if closer is not None:
                try:
                    closer.close()
                except Exception:  # closing must never stop the others from closing
                    log.exception("error while closing %r", closer)
        s = self.stats
        log.info(
            "stopped: %d frames read, %d dropped, %d source reconnects, %d stalls, %d requests, "
            "%d results, %d published, %d transient API errors, %d skipped (400), %d malformed%s",
            s.frames_read,
            self.queue.dropped,
            s.source_reconnects,
            s.source_stalls,
            s.requests,
            s.results,
            s.published,
            s.transient_errors,
            s.skipped_bad_request,
            s.malformed,
            f" ({s.failures_text()})" if s.api_failures else "",
        )
        log.info(
            "%s; %d late results dropped; %.0f bytes uploaded a call",
            s.calls_text(),
            s.late_results,
            s.bytes_sent / s.requests if s.requests else 0,
        )
        if len(s.request_latency):
            log.info("latency at exit: %s", s.latency_text())
