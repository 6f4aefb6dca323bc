"""The JSONL file: one message a line, rotated by size, paused while the disk is full.

In the live pipeline a thread of its own writes the lines: ``send`` only queues one
(bounded), so a slow disk, or a FIFO that nobody reads, never holds up the thread that
publishes.  When the queue is full the line is dropped, counted, and a warning says so
once.  A write that fails there (a full disk, a removed USB stick) pauses the file, not
the pipeline: one warning, the lines meanwhile are dropped and counted, a write is tried
again every ``RETRY_S``, and one line says when the file is written again.

The offline commands write in the caller's thread (``background=False``): there the file
is the point of the run, so a failed write is raised as OutputError.

With ``max_bytes``, a line that would take the file past it first rotates the file:
FILE.(keep-1) becomes FILE.keep ..., FILE becomes FILE.1, and a new FILE is started, so
the files together stay under about (keep + 1) x max_bytes.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import stat
import time

from streamer.errors import OutputError, UsageError
from streamer.threads import named_thread
from streamer.types import Delivery

log = logging.getLogger(__name__)

QUEUE_LINES = 256  # lines waiting for the disk before new ones are dropped
RETRY_S = 5.0  # while paused by a failed write, how often a line is tried again


class JsonlWriter:
    """Appends one message per line; each line is written whole, so a reader never sees half
    (a line cut short by a full disk is cut off again)."""

    def __init__(
        self,
        path: str,
        append: bool = True,
        what: str = "output.jsonl",
        background: bool = True,
        max_bytes: int = 0,
        keep: int = 0,
    ):
        self.path = path
        self.output_name = "jsonl"
        self.dropped = 0  # lines not written: the queue was full, or the file was paused
        self.error: OutputError | None = None
        self._what = what
        self._raised = False
        self._max_bytes = max_bytes
        self._keep = keep
        self._size: int | None = None  # bytes in the file, if it is a regular file
        self._paused_at: float | None = None  # monotonic time of the failed write, while paused
        self._retry_at = 0.0
        self._lost = 0  # lines dropped during the current pause
        self._slow_warned = False
        self._lines: queue.Queue[bytes | None] = queue.Queue(QUEUE_LINES)
        self._flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
        self._fd: int | None = None
        try:  # O_NONBLOCK: a FIFO with no reader yet must not block the start
            self._adopt(os.open(path, self._flags | os.O_NONBLOCK, 0o644))
            os.set_blocking(self._fd, True)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise UsageError(f"{what}: cannot open {path}: {exc.strerror or exc}") from None
            log.info(
                "%s: %s is a FIFO with no reader yet; lines wait for one (and are dropped "
                "while they cannot be written)",
                what,
                path,
            )
        self._closing = False
        self._thread = named_thread("jsonl", self._write_lines) if background else None
        if self._thread is not None:
            self._thread.start()

    def _adopt(self, fd: int) -> None:
        """Use fd as the file; its size is tracked (for rotation) only if it is a regular file."""
        self._fd = fd
        info = os.fstat(fd)
        self._size = info.st_size if stat.S_ISREG(info.st_mode) else None

    @property
    def paused(self) -> bool:
        return self._paused_at is not None

    def send(self, payload: bytes) -> bool:
        """Queue one line; False if it was dropped.  Offline, raises a write error once."""
        if self._thread is None:
            if self.error is None:
                self._write(payload + b"\n")
            self._raise_once()
            return self.error is None
        try:
            self._lines.put_nowait(payload + b"\n")
            return True
        except queue.Full:
            self.dropped += 1
            if not self._slow_warned:
                self._slow_warned = True
                log.warning(
                    "%s: %s cannot keep up; lines are dropped (and counted) until it does", self._what, self.path
                )
            return False

    def deliver(self, delivery: Delivery) -> None:
        if delivery.kind == "detections":
            self.send(delivery.payload)

    def flush(self, timeout_s: float = 2.0) -> None:
        """Wait (up to timeout_s) for the queued lines to be written; offline, raise a write error."""
        deadline = time.monotonic() + timeout_s
        while self._lines.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        self._raise_once()

    def _raise_once(self) -> None:
        if self.error is not None and not self._raised:
            self._raised = True
            raise self.error

    def _write_lines(self) -> None:
        while True:
            try:
                line = self._lines.get(timeout=1.0)
            except queue.Empty:
                if self._closing:
                    return
                continue
            try:
                if line is None:
                    return
                self._write(line)
            finally:
                self._lines.task_done()

    def _write(self, line: bytes) -> None:
        if self._paused_at is not None and time.monotonic() < self._retry_at:
            self._lost += 1
            self.dropped += 1
            return
        before = self._size
        try:
            if self._fd is None:  # a FIFO: blocks here until a reader opens it
                self._adopt(os.open(self.path, self._flags))
            if self._max_bytes and self._size and self._size + len(line) > self._max_bytes:
                self._rotate()
                before = 0
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            self._failed(exc, before)
            return
        if self._size is not None:
            self._size += len(line)
        if self._paused_at is not None:
            log.info(
                "%s: writing %s again after %.0f s; %d lines were dropped meanwhile",
                self._what,
                self.path,
                time.monotonic() - self._paused_at,
                self._lost,
            )
            self._paused_at, self._lost = None, 0

    def _rotate(self) -> None:
        """FILE.(keep-1) -> FILE.keep ... FILE -> FILE.1, and a new, empty FILE."""
        fd, self._fd = self._fd, None
        os.close(fd)
        for n in range(self._keep - 1, 0, -1):
            if os.path.exists(f"{self.path}.{n}"):
                os.replace(f"{self.path}.{n}", f"{self.path}.{n + 1}")
        if self._keep:
            os.replace(self.path, f"{self.path}.1")
        else:
            os.unlink(self.path)
        self._adopt(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644))

    def _failed(self, exc: OSError, size_before: int | None) -> None:
        """A write failed: cut off a half-written line; offline, keep the error to raise;
        live, pause the file (one warning) and try again later."""
        if self._fd is not None and size_before is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, size_before)
        reason = exc.strerror or str(exc)
        if self._thread is None:
            self.error = OutputError(
                f"{self._what}: cannot write {self.path}: {reason}; free some space or choose another file"
            )
            return
        self.dropped += 1
        self._lost += 1
        self._retry_at = time.monotonic() + RETRY_S
        if self._paused_at is None:
            self._paused_at = time.monotonic()
            log.warning(
                "%s: cannot write %s: %s; lines are dropped (and counted) until it can be written "
                "again (tried every %g s); free some space. Detection goes on.",
                self._what,
                self.path,
                reason,
                RETRY_S,
            )

    def close(self, timeout_s: float = 1.0) -> bool:
        """Write what is queued (up to timeout_s), then close the file; safe to call again (at
        once: a file left open because its writer was stuck stays so)."""
        if self._closing:
            return self._fd is None
        self._closing = True
        deadline = time.monotonic() + timeout_s
        if self._thread is not None and self._thread.is_alive():
            with contextlib.suppress(queue.Full):
                self._lines.put(None, timeout=timeout_s)
            self._thread.join(max(0.0, deadline - time.monotonic()))
            if self._thread.is_alive():  # blocked on a FIFO nobody reads: leave it, it is a daemon
                log.warning("%s: %d lines not written to %s at exit", self._what, self._lines.qsize(), self.path)
                return False
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        return True
