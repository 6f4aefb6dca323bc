"""The JSONL file: one message a line.

In the live pipeline a thread of its own writes the lines: ``send`` only queues one
(bounded), so a slow disk, or a FIFO that nobody reads, never holds up the thread that
publishes.  When the queue is full the line is dropped, counted, and a warning says so
once.  The offline commands write in the caller's thread (``background=False``).
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import time

from streamer.errors import OutputError, UsageError
from streamer.threads import named_thread

log = logging.getLogger(__name__)

QUEUE_LINES = 256  # lines waiting for the disk before new ones are dropped


class JsonlWriter:
    """Appends one message per line; each line is written whole, so a reader never sees half.

    A write that fails (a full disk, a removed USB stick) is raised as OutputError, naming
    the file, by the next ``send`` or by ``flush``; the writer then stays quiet, since the run
    is stopping because of it."""

    def __init__(self, path: str, append: bool = True, what: str = "output.jsonl", background: bool = True):
        self.path = path
        self.dropped = 0
        self.error: OutputError | None = None
        self._what = what
        self._raised = False
        self._lines: queue.Queue[bytes | None] = queue.Queue(QUEUE_LINES)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
        self._fd: int | None = None
        try:  # O_NONBLOCK: a FIFO with no reader yet must not block the start
            self._fd = os.open(path, flags | os.O_NONBLOCK, 0o644)
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
        self._flags = flags
        self._closing = False
        self._thread = named_thread("jsonl", self._write_lines) if background else None
        if self._thread is not None:
            self._thread.start()

    def send(self, payload: bytes) -> bool:
        """Queue one line; False if it was dropped.  Raises the writer's OutputError once."""
        if self._thread is None and self.error is None:
            self._write(payload + b"\n")
        if self.error is not None:
            self._raise_once()
            return False
        if self._thread is None:
            return True
        try:
            self._lines.put_nowait(payload + b"\n")
            return True
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1:
                log.warning(
                    "%s: %s cannot keep up; lines are dropped (and counted) until it does", self._what, self.path
                )
            return False

    def flush(self, timeout_s: float = 2.0) -> None:
        """Wait (up to timeout_s) for the queued lines to be written; raise a write error."""
        deadline = time.monotonic() + timeout_s
        while self._lines.unfinished_tasks and self.error is None and time.monotonic() < deadline:
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
                if self.error is None:
                    self._write(line)
            finally:
                self._lines.task_done()

    def _write(self, line: bytes) -> None:
        try:
            if self._fd is None:  # a FIFO: blocks here until a reader opens it
                self._fd = os.open(self.path, self._flags)
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            self.error = OutputError(
                f"{self._what}: cannot write {self.path}: {exc.strerror or exc}; free some space or choose another file"
            )

    def close(self, timeout_s: float = 1.0) -> None:
        """Write what is queued (up to timeout_s), then close the file; safe to call again."""
        self._closing = True
        if self._thread is not None and self._thread.is_alive():
            try:
                self._lines.put(None, timeout=timeout_s)
            except queue.Full:
                pass
            self._thread.join(timeout_s)
        if (
            self._thread is not None and self._thread.is_alive()
        ):  # blocked on a FIFO nobody reads: leave it, it is a daemon
            log.warning("%s: %d lines not written to %s at exit", self._what, self._lines.qsize(), self.path)
            return
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
