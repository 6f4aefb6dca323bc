"""JPEG frames for the web page: encoded only while someone watches, at most ``fps`` a second.

One encoder thread (``web-video``) sleeps while nobody watches.  With a viewer it takes the
newest annotated frame, shrinks it and encodes it, and hands the bytes to ``publish``, which
must not block: every viewer keeps only the newest frame (see ``NewestSlot``), so a slow or
stalled viewer has frames dropped, never queued.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

from streamer.imaging import encode_jpeg
from streamer.threads import IDLE_WAIT_S, named_thread

log = logging.getLogger(__name__)


class NewestSlot:
    """One viewer's mailbox on the event loop: it holds one item, and a newer one replaces it."""

    def __init__(self) -> None:
        self._item: bytes | None = None
        self._ready = asyncio.Event()

    def put(self, item: bytes) -> None:
        self._item = item
        self._ready.set()

    async def get(self, timeout_s: float) -> bytes | None:
        """The newest item, or None after ``timeout_s`` without one."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout_s)
        except asyncio.TimeoutError:
            return None
        self._ready.clear()
        item, self._item = self._item, None
        return item


class VideoFeed:
    """Encodes the newest annotated frame for the web while ``watch`` has been called more
    often than ``unwatch``; ``snapshot`` encodes one frame on demand."""

    def __init__(
        self,
        annotated: Callable[..., object],
        publish: Callable[[bytes], None],
        stop: threading.Event,
        *,
        fps: float = 10.0,
        max_side_px: int = 960,
        quality: int = 80,
    ):
        self._annotated = annotated
        self._publish = publish
        self._stop = stop
        self.interval_s = 1.0 / fps
        self.max_side_px, self.quality = max_side_px, quality
        self.viewers = 0  # watch() calls less unwatch() calls
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = named_thread("web-video", self._run)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout_s: float) -> bool:
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def watch(self) -> None:
        with self._lock:
            self.viewers += 1
        self._wake.set()

    def unwatch(self) -> None:
        with self._lock:
            self.viewers = max(0, self.viewers - 1)

    def snapshot(self, raw: bool = False) -> bytes | None:
        """The newest frame as JPEG (drawn on unless ``raw``), or None before the first frame."""
        frame = self._annotated(raw=raw)
        return None if frame is None else encode_jpeg(frame.image, self.quality, self.max_side_px)

    def _run(self) -> None:
        next_due = 0.0
        while not self._stop.is_set():
            if not self.viewers:
                self._wake.wait(IDLE_WAIT_S)
                self._wake.clear()
                continue
            now = time.monotonic()
            if now < next_due:
                self._stop.wait(next_due - now)
                continue
            next_due = max(next_due + self.interval_s, now)  # no burst after a slow encode
            try:
                jpeg = self.snapshot()
            except Exception:  # a bad frame must not end the page's video for good
                log.exception("could not encode a frame for the web page")
                continue
            if jpeg is not None:
                self._publish(jpeg)
