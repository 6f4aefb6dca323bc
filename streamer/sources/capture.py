"""The capture worker: reads the source continuously into a drop-oldest queue."""

from __future__ import annotations

import logging
import threading
import time

from streamer.errors import SourceError, UsageError
from streamer.queues import DropOldestQueue, Latest
from streamer.retry import Backoff, FaultLog
from streamer.stats import Stats
from streamer.threads import join_all, named_thread, record_failure
from streamer.types import Frame

log = logging.getLogger(__name__)


class CaptureWorker:
    """Thread ``capture``: open, read, hand each frame on; reopen with backoff on failure.

    The queue (for inference) drops its oldest frame when full and counts it; ``latest``
    always holds the newest frame for the preview.  Reading is the only per-frame work here.

    A read or open that stays blocked past ``stall_timeout_s`` (a frozen camera that the
    read timeout does not catch, opencv#22677) is abandoned by ``check_stall``, which the
    pipeline calls: the blocked thread is left to finish its call and exit on its own, and
    a new thread reads from a fresh copy of the source.
    """

    MAX_ABANDONED = 2  # blocked threads left behind before giving up

    def __init__(
        self,
        source,
        queue: DropOldestQueue[Frame],
        latest: Latest[Frame],
        stats: Stats,
        stop: threading.Event,
        *,
        loop: bool = False,
        backoff: Backoff | None = None,
        stall_timeout_s: float = 10.0,
        open_timeout_s: float = 5.0,
    ):
        self.source = source
        self.queue = queue
        self.latest = latest
        self.stats = stats
        self.stop = stop
        self.loop = loop
        self.backoff = backoff or Backoff(0.5, 30.0)
        self.stall_timeout_s = stall_timeout_s
        self.open_limit_s = max(stall_timeout_s, 2 * open_timeout_s)  # an open is slow by nature
        self.finished = threading.Event()  # set when a file has ended (and loop is off)
        self.error: BaseException | None = None
        self._faults = FaultLog(log, f"source {source.name}")
        self._next_id = self._frames_at_open = 0  # the next frame's id, and what it was at the last open
        self._generation = 0
        self._busy: tuple[str, float, int] | None = None  # (read|open, monotonic start, generation)
        self._state = threading.Lock()  # guards _busy, _generation, _thread and _threads
        self._threads: list[threading.Thread] = []
        self._thread = self._new_thread()

    def _new_thread(self) -> threading.Thread:
        thread = named_thread("capture", self._run, self._generation, self.source)
        self._threads.append(thread)
        return thread

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> bool:
        """Wait for the reading thread (and any abandoned one) to end; whether all have."""
        join_all(self._threads, time.monotonic() + timeout)
        self._threads = [t for t in self._threads if t.is_alive()]
        return not self._threads

    def check_stall(self, now: float) -> bool:
        """Called by the supervisor (``now``: its monotonic time): abandon a read or open blocked
        for too long and start reading from a fresh source.  Returns whether it did."""
        with self._state:  # decide and swap under the lock; log and start the thread after it
            if self._busy is None or self.stop.is_set() or not self._thread.is_alive():
                return False
            what, since, _ = self._busy
            if now - since < (self.open_limit_s if what == "open" else self.stall_timeout_s):
                return False
            self.stats.source_stalls += 1
            self.stats.source_state = "stalled"
            self._generation += 1
            self._busy = None
            self._threads = [t for t in self._threads if t.is_alive()]
            blocked = len(self._threads)
            if blocked <= self.MAX_ABANDONED:
                fresh = getattr(self.source, "fresh", None)
                self.source = fresh() if fresh else self.source
                self._thread = self._new_thread()
        if blocked > self.MAX_ABANDONED:
            # Calls that never return (opencv#22677) each keep a thread and a capture
            # alive: rather than pile them up, stop; a service manager restarts us.
            self.error = SourceError(
                f"source {self.source.name}: {blocked} reads or opens are blocked and never "
                f"returned (no frame for {now - since:.0f} s); stopping so that the process can be restarted"
            )
            self.stop.set()
        else:
            self._faults.fault(f"no frame for {now - since:.0f} s (a {what} is blocked); abandoning it and reopening")
            self._thread.start()
        return True

    def _current(self, generation: int) -> bool:
        return generation == self._generation and not self.stop.is_set()

    def _call(self, generation: int, what: str, func):
        with self._state:
            if generation == self._generation:
                self._busy = (what, time.monotonic(), generation)
        try:
            return func()
        finally:
            with self._state:
                if self._busy is not None and self._busy[2] == generation:
                    self._busy = None

    def _run(self, generation: int, source) -> None:
        try:
            self._loop(generation, source)
        except BaseException as exc:  # fail fast: record, stop everything
            if generation == self._generation:  # not an abandoned thread's
                record_failure(exc, self, self.stop, "capture", log)
        finally:
            source.close()

    def _open(self, generation: int, source, first: bool, reconnect: bool = True) -> bool:
        """Open the source; ``first``: the run's first open, ``reconnect``: count it as a
        reconnect (every later open is one, but a file's next loop)."""
        if reconnect and not first:
            self.stats.source_reconnects += 1  # each attempt, so the count agrees with the log
        try:
            self._call(generation, "open", source.open)
        except SourceError as exc:
            if first and source.is_file:  # the user named a file OpenCV cannot read
                raise UsageError(
                    f"source.uri: {exc}: not a video OpenCV can read; check the file "
                    "(ffprobe FILE) or convert it (ffmpeg -i FILE out.mp4)"
                ) from None
            if first and not getattr(source, "retry_first_open", False):
                raise  # a local pipeline (libcamerasrc ...) that does not open: say so and stop, exit 1
            return self._reconnect(str(exc))
        if not self._current(generation):
            return False
        self._frames_at_open = self._next_id
        self.stats.source_state = "open"
        log.info("source %s open%s", source.name, f" at {source.fps:g} fps" if getattr(source, "fps", None) else "")
        return True

    def _loop(self, generation: int, source) -> None:
        opened, first = False, generation == 0
        while self._current(generation) and not self.finished.is_set():  # until a file ends (loop off)
            if not opened:
                opened = self._open(generation, source, first)
                first = False
                continue
            image = self._call(generation, "read", source.read)
            if not self._current(generation):
                return  # abandoned by the stall watchdog while blocked, or stopping
            if image is None:
                opened = self._after_failed_read(generation, source)
                continue
            self._publish(source, image)

    def _after_failed_read(self, generation: int, source) -> bool:
        """Decide what a failed read means; returns whether the source is still open."""
        source.close()
        if source.is_file:
            if self._next_id == self._frames_at_open:  # opened, but not one frame decoded
                raise UsageError(
                    f"source.uri: {source.name}: no frame could be decoded; the file is "
                    "empty or damaged (check it with ffprobe)"
                )
            if self.loop:
                log.info("source %s ended; looping", source.name)
                return self._open(generation, source, first=False, reconnect=False)
            log.info("source %s ended after %d frames", source.name, self._next_id)
            self.stats.source_state = "ended"
            self.finished.set()
            return False
        # A live source that stopped delivering: release, back off, reopen (docs/facts.md).
        return self._reconnect("read failed; reopening")

    def _reconnect(self, fault: str) -> bool:
        """Log the fault, back off before the next open; False: the source is not open."""
        self.stats.source_state = "reconnecting"
        self._faults.fault(fault)
        self.stop.wait(self.backoff.next_delay())
        return False

    def _publish(self, source, image) -> None:
        now_mono, now_wall = time.monotonic(), time.time()
        frame = Frame(source.name, self._next_id, now_wall, now_mono, image)
        self._next_id += 1
        self.queue.put(frame)
        self.latest.set(frame)
        self.stats.frames_read += 1
        self.stats.last_frame_mono = now_mono
        self.stats.capture_rate.tick(now_mono)
        self.backoff.reset()  # both cheap no-ops unless the source was failing
        self._faults.recovered()
