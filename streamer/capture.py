"""The capture worker: reads the source continuously into a drop-oldest queue."""

from __future__ import annotations

import logging
import threading
import time

from streamer.backoff import Backoff, FaultLog
from streamer.errors import SourceError
from streamer.frames import DropOldestQueue, Frame, Latest
from streamer.stats import Stats

log = logging.getLogger(__name__)


class CaptureWorker:
    """Thread ``streamer.capture``: open, read, hand each frame on; reopen with backoff on failure.

    The queue (for inference) drops its oldest frame when full and counts it; ``latest``
    always holds the newest frame for the preview.  Reading is the only per-frame work here.
    """

    def __init__(self, source, queue: DropOldestQueue[Frame], latest: Latest[Frame], stats: Stats,
                 stop: threading.Event, *, loop: bool = False, backoff: Backoff | None = None):
        self.source = source
        self.queue = queue
        self.latest = latest
        self.stats = stats
        self.stop = stop
        self.loop = loop
        self.backoff = backoff or Backoff(0.5, 30.0)
        self.finished = threading.Event()  # set when a file has ended (and loop is off)
        self.error: BaseException | None = None
        self._faults = FaultLog(log, f"source {source.name}")
        self._next_id = 0
        self._thread = threading.Thread(target=self._run, name="streamer.capture", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            self._loop()
        except SourceError as exc:
            self.error = exc
            self.stop.set()
        except BaseException as exc:  # fail fast: record, stop everything
            log.exception("capture stopped by an unexpected error")
            self.error = exc
            self.stop.set()
        finally:
            self.source.close()

    def _open(self, first: bool) -> bool:
        try:
            self.source.open()
        except SourceError as exc:
            if first and getattr(self.source, "kind", None) != "stream":
                raise  # a missing webcam or unreadable file: say so and stop
            self.stats.source_state = "reconnecting"
            self._faults.fault(str(exc))
            self.stop.wait(self.backoff.next_delay())
            return False
        self.stats.source_state = "open"
        log.info("source %s open%s", self.source.name,
                 f" at {self.source.fps:g} fps" if getattr(self.source, "fps", None) else "")
        return True

    def _loop(self) -> None:
        opened, first = False, True
        while not self.stop.is_set():
            if not opened:
                opened = self._open(first)
                first = False
                continue
            image = self.source.read()
            if image is None:
                opened = self._after_failed_read()
                if self.finished.is_set():
                    return
                continue
            self._publish(image)

    def _after_failed_read(self) -> bool:
        """Decide what a failed read means; returns whether the source is still open."""
        self.source.close()
        if self.source.is_file:
            if self.loop:
                log.info("source %s ended; looping", self.source.name)
                return self._open(first=False)
            log.info("source %s ended after %d frames", self.source.name, self._next_id)
            self.stats.source_state = "ended"
            self.finished.set()
            return False
        # A live source that stopped delivering: release, back off, reopen (field notes).
        self.stats.source_state = "reconnecting"
        self.stats.source_reconnects += 1
        self._faults.fault("read failed; reopening")
        self.stop.wait(self.backoff.next_delay())
        return False

    def _publish(self, image) -> None:
        now_mono, now_wall = time.monotonic(), time.time()
        frame = Frame(self.source.name, self._next_id, now_wall, now_mono, image)
        self._next_id += 1
        self.queue.put(frame)
        self.latest.set(frame)
        self.stats.frames_read += 1
        self.stats.capture_rate.tick(now_mono)
        if self.backoff.failures:
            self.backoff.reset()
            self._faults.recovered()
