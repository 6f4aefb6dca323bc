"""Named threads: each shows under its own name in logs, in ``py-spy dump`` and, since the
name is set as the OS thread name too, in ``top -H`` and ``/proc/PID/task/*/comm``."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, TextIO

from streamer.errors import StreamerError

IDLE_WAIT_S = 1.0  # the longest an idle worker thread sleeps before it looks at the stop flag again

_libc = ctypes.CDLL(ctypes.util.find_library("c")) if sys.platform.startswith("linux") else None


def set_os_thread_name(thread: threading.Thread | None = None) -> None:
    """Give a running thread (default: this one) its Python name as its OS name too.
    Linux keeps 15 bytes of it; elsewhere nothing happens."""
    thread = thread or threading.current_thread()
    if _libc is not None and thread.ident is not None:
        _libc.pthread_setname_np(ctypes.c_ulong(thread.ident), thread.name.encode("ascii", "replace")[:15])


def named_thread(name: str, target: Callable[..., object], *args: object) -> threading.Thread:
    """A daemon thread (not started) that runs ``target(*args)`` under ``name``, for Python and the OS."""

    def run() -> None:
        set_os_thread_name()
        target(*args)

    return threading.Thread(target=run, name=name, daemon=True)


def record_failure(
    exc: BaseException, owner: Any, stop: threading.Event | None, what: str, logger: logging.Logger
) -> None:
    """A worker thread's loop raised what it does not handle (a refused key, a full disk, a
    bug): log it unless it is ours (a StreamerError is said in one line at exit), keep the
    first such error in ``owner.error`` and set ``stop``, which ends the run."""
    if not isinstance(exc, StreamerError):
        logger.error("%s stopped by an unexpected error", what, exc_info=exc)
    if owner.error is None:
        owner.error = exc
    if stop is not None:
        stop.set()


def join_all(threads: list[threading.Thread], deadline: float) -> list[str]:
    """Join each thread until the shared monotonic deadline; the names of those still alive."""
    for thread in threads:
        if thread.is_alive() and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
    return [t.name for t in threads if t.is_alive()]


def dump_threads(file: TextIO) -> None:
    """Every thread's name, OS id and stack, as faulthandler dumps them but with the names
    (which Python's faulthandler does not print): ``kill -USR1 PID`` asks for it."""
    frames = sys._current_frames()
    lines = []
    for thread in threading.enumerate():
        frame = frames.get(thread.ident)
        if frame is not None:
            lines.append(f"Thread {thread.name!r} (OS thread {thread.native_id}), most recent call last:\n")
            lines.extend(traceback.format_stack(frame))
    file.write("".join(lines))
    file.flush()
