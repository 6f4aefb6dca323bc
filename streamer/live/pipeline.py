"""The live pipeline: wires capture -> inference -> publisher -> outputs and supervises them.

Capture, inference and the publisher run in threads; the window and the recording are drawn on
the calling thread, because HighGUI must.  One stop event ends everything; every wait in every
thread is bounded, and the shutdown runs against one deadline (``STOP_DEADLINE_S``): whatever
does not finish by then is named in a warning, and the process exits all the same.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

from streamer.api.client import DetectionClient
from streamer.errors import EXIT_FAILURE, EXIT_OK, StreamerError
from streamer.live.dispatch import InferenceSettings, InferenceWorker
from streamer.live.publisher import NewestResults, Publisher
from streamer.message import status_message
from streamer.outputs.notify import SystemdNotifier
from streamer.outputs.overlay import draw_notice, draw_result, draw_status, event_image, status_band_height
from streamer.outputs.recorder import Recorder
from streamer.outputs.window import Window
from streamer.queues import DropOldestQueue, Latest
from streamer.retry import Backoff
from streamer.sources.capture import CaptureWorker
from streamer.stats import Snapshot, Stats
from streamer.threads import join_all, named_thread
from streamer.types import Frame, Output, Result

log = logging.getLogger(__name__)

# From the stop to every close returned, leaving the interpreter's own exit time (about half a
# second, more on a loaded machine) inside the 3 s a service manager or a user waits.
STOP_DEADLINE_S = 1.5
# Of which inference gets this much to end its requests: a request thread left in an HTTP call is
# pure Python and is safely left behind.  Capture gets more: a thread left inside OpenCV's read or
# release (FFmpeg tearing down an RTSP session) when the interpreter exits can abort the process
# (SIGABRT, seen with opencv-python-headless 4.14 in CI).
INFERENCE_SHARE_S = 0.6
CAPTURE_SHARE_S = 1.2
STALE_AFTER_S = 3.0  # a result older than this is marked stale on the preview
# With no window the output loop has no frames to draw (the publisher thread publishes): it
# wakes for a stop at once, and otherwise this often (each wake-up costs CPU), to check for a
# stalled source and the systemd watchdog ...
IDLE_WAKE_S = 1.0
FILE_WAKE_S = 0.25  # ... or this often while a file plays, to see its end soon after
SYSTEMD_STATUS_S = 2.0  # how often STATUS= is sent to systemd (a datagram on a local socket)


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
    outputs: list[Output] = field(default_factory=list)  # each gets every message through deliver()
    recorder: Recorder | None = None


def close_all(closers: list[tuple[str, Any]], deadline: Deadline) -> list[str]:
    """Close each at once, on a thread of its own, each with what is left of the deadline (one
    that blocks cannot eat the others' time); the names of those that did not finish in time."""
    finished: dict[str, bool] = {}

    def close(name: str, closer: Any) -> None:
        try:
            finished[name] = closer.close(deadline.left()) is not False
        except Exception:  # closing must never stop the others from closing
            log.exception("error while closing %s", name)
            finished[name] = True

    threads = [named_thread(f"close-{name}", close, name, closer) for name, closer in closers]
    for thread in threads:
        thread.start()
    join_all(threads, deadline.at)
    return [name for name, _ in closers if not finished.get(name, False)]


class Deadline:
    """One point in time that every step of the shutdown shares."""

    def __init__(self, seconds: float):
        self.at = time.monotonic() + seconds

    def left(self, keep_s: float = 0.0) -> float:
        """Seconds left, less ``keep_s`` kept for the steps after this one; never negative."""
        return max(0.0, self.at - keep_s - time.monotonic())


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
        self.results = NewestResults()
        self.publisher = Publisher(
            self.results,
            self.stats,
            self.snapshot,
            source=source.name,
            name=name,
            heartbeat_s=sup.heartbeat_s,
            stop=stop,
            outputs=outputs.outputs,
        )
        self.capture = CaptureWorker(
            source, self.queue, self.latest_frame, self.stats, stop, loop=loop, backoff=source_backoff,
            stall_timeout_s=sup.stall_timeout_s, open_timeout_s=sup.open_timeout_s,
        )  # fmt: skip
        self.inference = InferenceWorker(
            self.queue, client, self.publisher, self.stats, stop, settings, backoff=api_backoff,
            failures_to_open=sup.probe_after_failures,
        )  # fmt: skip
        self._last_watchdog = self._last_systemd_status = float("-inf")

    def add_output(self, output: Output) -> None:
        """One more output for the publisher (it takes the next message)."""
        self.outputs.outputs.append(output)

    def run(self) -> int:
        """Run until stopped (signal, q/Esc, duration, end of file or a fatal error); exit code."""
        for worker in (self.publisher, self.capture, self.inference):
            worker.start()
        try:
            self._output_loop()
        finally:
            self._shutdown()
        errors = [w.error for w in (self.inference, self.capture, self.publisher) if w.error is not None]
        for error in errors:
            if isinstance(error, StreamerError):
                raise error
        return EXIT_FAILURE if errors else EXIT_OK  # any other was logged with its traceback by the thread it ended

    def snapshot(self, now: float | None = None, with_cpu: bool = False) -> Snapshot:
        """The run at this moment; any thread may ask."""
        latest = self.results.latest
        return self.stats.snapshot(
            frames_dropped=self.queue.dropped,
            last_result_mono=None if latest is None else latest.captured_mono,
            last_result_frame_id=None if latest is None else latest.frame_id,
            outputs_dropped=self.publisher.dropped(),
            now=now,
            with_cpu=with_cpu,
        )

    def status_message(self) -> dict:
        """The heartbeat message as of now (the web page's /api/status)."""
        return status_message(self.source_name, "running", self.snapshot(with_cpu=True), name=self.name)

    def _output_loop(self) -> None:
        started = last_status = time.monotonic()
        shown_frame = 0
        window = self.outputs.window
        while not self.stop.is_set():
            # A window is polled every 20 ms (HighGUI); a recorder alone: frames wake it, and
            # without frames it looks often for a stop.
            if self.draws:
                self._changed.wait(0.02 if window else min(FILE_WAKE_S, self._idle_timeout(started)))
                self._changed.clear()
            else:  # nothing to draw: sleep until a stop, or the next thing due
                self.stop.wait(self._idle_timeout(started))
            now = time.monotonic()
            frame_version, frame = self.latest_frame.get()
            if self.draws and frame is not None and frame_version != shown_frame:
                shown_frame = frame_version
                self._show(frame, now)
            if (
                (window and not window.poll())  # q, Esc, or the window closed
                or (self.duration_s is not None and now - started >= self.duration_s)
                or (self.capture.finished.is_set() and self._nothing_left_to_infer())
            ):
                break
            self.capture.check_stall(now)
            self._tell_systemd(now)
            if now - last_status >= self.supervision.status_interval_s:
                last_status = now
                snapshot = self.snapshot(now)
                log.info("%s", snapshot.line())
                if snapshot.request_latency is not None:
                    log.info("latency: %s", snapshot.latency_text())

    def _idle_timeout(self, started: float) -> float:
        """How long a headless loop may sleep: until the next watchdog ping or the end of
        --duration, and at most IDLE_WAKE_S (a quarter of the stall timeout if shorter);
        FILE_WAKE_S while a file plays, and briefly once it has ended (its last answer ends the run)."""
        if self.capture.finished.is_set():
            return 0.1
        now = time.monotonic()
        due = [
            FILE_WAKE_S if self.capture.source.is_file and not self.capture.loop else IDLE_WAKE_S,  # a file that ends
            self.supervision.stall_timeout_s / 4,
        ]
        if self.duration_s is not None:
            due.append(started + self.duration_s - now)
        window = self.notifier.watchdog_interval_s if self.notifier is not None else None
        if window and self.notifier.is_ready:  # the next ping; while unhealthy, look again soon
            due.append(max(self._last_watchdog + window / 4 - now, window / 16))
        return max(0.001, min(due))

    def _tell_systemd(self, now: float) -> None:
        """READY=1 once frames and an answer came, then a watchdog ping while healthy."""
        notifier = self.notifier
        if notifier is None or not notifier.enabled:
            return
        if now - self._last_systemd_status >= SYSTEMD_STATUS_S:  # `systemctl status` is true from the start
            self._last_systemd_status = now
            notifier.status(self.snapshot(now).line())
        if not notifier.is_ready and None not in (self.stats.last_frame_mono, self.stats.last_api_answer_mono):
            notifier.ready(self.snapshot(now).line())
        window = notifier.watchdog_interval_s
        if window and notifier.is_ready and now - self._last_watchdog >= window / 4 and self.healthy(now, window):
            self._last_watchdog = now
            notifier.watchdog()

    def healthy(self, now: float, window_s: float) -> bool:
        """The health rule (``Snapshot.problems``) finds nothing wrong within the window."""
        return not self.snapshot(now).problems(window_s)

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

    def annotated(self, raw: bool = False) -> Frame | None:
        """The newest frame with the newest result drawn on it, as the preview shows it (a
        copy: any thread may call this); ``raw``: without the drawing.  None before a frame."""
        _, frame = self.latest_frame.get()
        if frame is None or raw:
            return frame
        return replace(frame, image=self._draw(frame, self.results.latest, time.monotonic()))

    def event_frame(self, result: Result) -> Frame | None:
        """The newest frame with ``result`` drawn, the camera's name and the frame's time in a
        corner, and no status band: the picture of an event (MQTT's event snapshot)."""
        _, frame = self.latest_frame.get()
        if frame is None:
            return None
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(frame.captured_at))
        return replace(frame, image=event_image(frame.image, result, f"{self.name or self.source_name}  {stamp}"))

    def _draw(self, frame: Frame, result: Result | None, now: float):
        image = frame.image.copy()  # the capture thread's frame is shared: draw on a copy
        band = status_band_height(image)
        snapshot = self.snapshot(now)
        if result is not None:  # the source may have changed size (a camera back at another resolution)
            draw_result(image, result.rescaled_to(frame.width, frame.height), min_y=band)
            age_s = now - result.captured_mono
            if snapshot.api_state == "down" or age_s > STALE_AFTER_S:
                why = f": {snapshot.api_text()} ({snapshot.failures_text()})" if snapshot.api_state == "down" else ""
                draw_notice(image, f"STALE: last result {age_s:.1f} s old{why}", band)
        draw_status(image, snapshot.line())
        return image

    def _show(self, frame: Frame, now: float) -> None:
        image = self._draw(frame, self.results.latest, now)
        if self.outputs.recorder:
            self.outputs.recorder.write(image, frame.captured_mono)
        if self.outputs.window and not self.outputs.window.show(image):
            self.stop.set()

    def _shutdown(self) -> None:
        """Stop every thread and close every output against one deadline; name what did not finish."""
        self.stop.set()
        deadline = Deadline(STOP_DEADLINE_S)
        if self.notifier is not None:
            self.notifier.stopping()
        joins = (("capture", self.capture, CAPTURE_SHARE_S), ("inference", self.inference, INFERENCE_SHARE_S))
        # Each joins within its share of the deadline, the rest kept for the steps after it.
        unfinished = [
            name for name, worker, share_s in joins if not worker.join(deadline.left(STOP_DEADLINE_S - share_s))
        ]
        if not self.publisher.stop(deadline.at - 0.5 * deadline.left()):  # the last results, the last heartbeat
            unfinished.append("publish")
        log.debug("workers and publisher stopped, %.2f s left", deadline.left())
        if self.outputs.window is not None:  # HighGUI: on this thread
            self.outputs.window.close()
        closers = [("recording", self.outputs.recorder)] + [(o.output_name, o) for o in self.outputs.outputs]
        unfinished += close_all([(name, closer) for name, closer in closers if closer is not None], deadline)
        if self.notifier is not None:
            self.notifier.close()
        if unfinished:
            # Daemon threads in a bounded call (HTTP or camera timeout), or an output that could
            # not finish (a FIFO nobody reads): the process exits without waiting for them.
            log.warning("not finished at exit (the process exits without them): %s", ", ".join(unfinished))
        snapshot = self.snapshot()
        log.info("stopped: %s", snapshot.summary())
        log.info("%s", snapshot.calls_text())
        if snapshot.request_latency is not None:
            log.info("latency at exit: %s", snapshot.latency_text())
