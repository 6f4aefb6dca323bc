"""The recorded video of the annotated frames."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from streamer.errors import UsageError

FOURCC = {".mp4": "mp4v", ".avi": "MJPG"}  # the wheels carry no H.264 encoder (field notes)


class Recorder:
    """Writes annotated frames to a video; opened on the first frame, at the source's rate.

    ``fps`` may be a callable: it is asked on the first frame, once the source is open and
    knows its own rate.  ``what`` names the option in error messages."""

    def __init__(self, path: str, fps: float | Callable[[], float | None], what: str = "output.record"):
        self.path = path
        self._fps = fps
        self.fps: float | None = None
        self._what = what
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        self._start: float | None = None
        self._written = 0
        suffix = Path(path).suffix.lower()
        if suffix not in FOURCC:
            raise UsageError(f"{what}: {path}: expected a file name ending in .mp4 or .avi")
        self._fourcc = cv2.VideoWriter_fourcc(*FOURCC[suffix])
        parent = Path(path).resolve().parent
        if not parent.is_dir():
            raise UsageError(f"{what}: folder {parent} does not exist")

    def write(self, image: np.ndarray, captured_mono: float | None = None) -> None:
        """Append a frame.  With its capture time, the frame is placed on the video's timeline:
        repeated to fill frames the preview never saw, skipped if it comes early, so that
        a live recording plays at real speed."""
        size = (image.shape[1], image.shape[0])
        if self._writer is None:
            fps = self._fps() if callable(self._fps) else self._fps
            self.fps = fps if fps and 0 < fps <= 240 else 30.0
            self._writer = cv2.VideoWriter(self.path, self._fourcc, self.fps, size)
            if not self._writer.isOpened():
                raise UsageError(f"{self._what}: cannot write video {self.path}")
            self._size = size
            self._start = captured_mono
            self._written = 0
        elif size != self._size:  # the source changed size (e.g. after a reconnect)
            image = cv2.resize(image, self._size)
        copies = 1
        if captured_mono is not None and self._start is not None:
            due = int((captured_mono - self._start) * self.fps) + 1  # frames the timeline holds by now
            copies = min(due - self._written, int(self.fps * 5))  # a long stall is not filled for ever
        for _ in range(max(0, copies)):
            self._writer.write(image)
            self._written += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
