"""The recorded video of the annotated frames: one file, or segments with a cap on their total size.

With ``segment_s``, the video is cut into files of that many seconds of timeline, each named
after its start (``STEM-20261204T181940Z.mp4``, UTC, so names sort by time), and with
``max_bytes`` the oldest segments are deleted while all of them together take more.

OpenCV's VideoWriter says nothing when the disk is full: it writes a broken file.  So the
free space of the folder is looked at once a second, and below ``min_free_bytes`` the
recording pauses: the file is closed while it can still be finished, one warning is logged,
frames are skipped (and counted), and a new file is started when the space is back.  The
live pipeline never waits for any of this.

VideoWriter does not say why a file did not open either: a folder this user may not write in
(``/sys``, a read-only disk) is found at start by creating a file there, and refused with the
system's reason, rather than found at the first frame, or taken for a full disk.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from streamer.errors import OutputError, UsageError

log = logging.getLogger(__name__)

FOURCC = {".mp4": "mp4v", ".avi": "MJPG"}  # the wheels carry no H.264 encoder (docs/facts.md)
MIN_FREE_BYTES = 64 * 2**20  # a few seconds of 1080p MJPG: time to close the file properly
SPACE_CHECK_S = 1.0


def unwritable(folder: Path) -> str | None:
    """Why no file can be created in ``folder`` (the system's reason and what to do), or None."""
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".streamer-"):
            return None
    except OSError as exc:
        return f"{exc.strerror or exc} (record to a folder on a writable disk that this user may write to)"


class Recorder:
    """Writes annotated frames to a video; opened on the first frame, at the source's rate.

    ``fps`` may be a callable: it is asked on the first frame, once the source is open and
    knows its own rate.  ``what`` names the option in error messages.  ``min_free_bytes``: pause
    below this much free space (the live pipeline passes MIN_FREE_BYTES; 0 never pauses)."""

    def __init__(
        self,
        path: str,
        fps: float | Callable[[], float | None],
        what: str = "output.record",
        *,
        segment_s: float = 0.0,
        max_bytes: int = 0,
        min_free_bytes: int = 0,
    ):
        self.path = path
        self._fps = fps
        self.fps: float | None = None
        self._what = what
        self._segment_s = segment_s
        self._max_bytes = max_bytes
        self._min_free_bytes = min_free_bytes
        self._writer: cv2.VideoWriter | None = None
        self.current: str | None = None  # the file being written
        self._size: tuple[int, int] | None = None
        self._start: float | None = None
        self._written = 0
        self.skipped = 0  # frames not recorded while paused for space
        self.paused = False
        self._checked_at = float("-inf")
        suffix = Path(path).suffix.lower()
        if suffix not in FOURCC:
            raise UsageError(f"{what}: {path}: expected a file name ending in .mp4 or .avi")
        self._fourcc = cv2.VideoWriter_fourcc(*FOURCC[suffix])
        self._folder = Path(path).resolve().parent
        if not self._folder.is_dir():
            raise UsageError(f"{what}: folder {self._folder} does not exist")
        if problem := unwritable(self._folder):
            raise UsageError(f"{what}: cannot write {path}: {problem}")
        self._segment_name = re.compile(
            rf"{re.escape(Path(path).stem)}-(\d{{8}}T\d{{6}}Z)(?:-(\d+))?{re.escape(Path(path).suffix)}"
        )

    def write(self, image: np.ndarray, captured_mono: float | None = None) -> None:
        """Append a frame.  With its capture time, the frame is placed on the video's timeline:
        repeated to fill frames the preview never saw, skipped if it comes early, so that
        a live recording plays at real speed."""
        if not self._space_ok():
            self.skipped += 1
            return
        size = (image.shape[1], image.shape[0])
        if (
            self._segment_s
            and captured_mono is not None
            and self._start is not None
            and captured_mono - self._start >= self._segment_s
        ):
            self.close()  # the segment is full: the next one starts
        if self._writer is None:
            self._open_file(size, captured_mono)
        elif size != self._size:  # the source changed size (e.g. after a reconnect)
            image = cv2.resize(image, self._size)
        copies = 1
        if captured_mono is not None and self._start is not None:
            due = int((captured_mono - self._start) * self.fps) + 1  # frames the timeline holds by now
            copies = min(due - self._written, int(self.fps * 5))  # a long stall is not filled for ever
        for _ in range(max(0, copies)):
            self._writer.write(image)
            self._written += 1

    def _file_name(self) -> str:
        """The path itself for one file; a new name for each segment, or after a pause."""
        if not self._segment_s and self.current is None:
            return self.path
        base = Path(self.path)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        name = base.with_name(f"{base.stem}-{stamp}{base.suffix}")
        n = 1
        while name.exists():  # two segments within a second (a short segment_s)
            n += 1
            name = base.with_name(f"{base.stem}-{stamp}-{n}{base.suffix}")
        return str(name)

    def _open_file(self, size: tuple[int, int], captured_mono: float | None) -> None:
        if self.fps is None:
            fps = self._fps() if callable(self._fps) else self._fps
            self.fps = fps if fps and 0 < fps <= 240 else 30.0
        first = self.current is None
        self.current = self._file_name()
        self._writer = cv2.VideoWriter(self.current, self._fourcc, self.fps, size)
        if not self._writer.isOpened():
            self._writer = None
            why = unwritable(self._folder) or "OpenCV's video writer refused it"
            # At the first frame, the user's choice; later (a disk gone read-only), a runtime fault.
            raise (UsageError if first else OutputError)(f"{self._what}: cannot write video {self.current}: {why}")
        self._size = size
        self._start = captured_mono
        self._written = 0
        if self._segment_s and self._max_bytes:
            self._enforce_total()

    def segments(self) -> list[Path]:
        """The segment files of this recording in the folder, oldest first."""
        found = [(p, self._segment_name.fullmatch(p.name)) for p in self._folder.iterdir()]
        # By start time, then by the -2, -3 ... of segments started within the same second.
        return [p for p, m in sorted((f for f in found if f[1]), key=lambda f: (f[1][1], int(f[1][2] or 1)))]

    def _enforce_total(self) -> None:
        """Delete the oldest segments (never the one being written) while all take more than max_bytes."""
        files = [(p, p.stat().st_size) for p in self.segments()]
        total = sum(size for _, size in files)
        for path, size in files:
            if total <= self._max_bytes or str(path) == self.current:
                break
            try:
                path.unlink()
            except OSError as exc:
                log.warning("%s: cannot delete the old segment %s: %s", self._what, path, exc.strerror or exc)
                break
            total -= size
            log.debug("%s: deleted the old segment %s (%d bytes)", self._what, path, size)

    def _space_ok(self) -> bool:
        """Whether there is room to record; looked at once a second.  Pauses and resumes."""
        now = time.monotonic()
        if now - self._checked_at < SPACE_CHECK_S:
            return not self.paused
        self._checked_at = now
        try:
            free = shutil.disk_usage(self._folder).free
        except OSError:
            return not self.paused
        if free < self._min_free_bytes and not self.paused:
            self.paused = True
            self.close()  # while there is still room to finish it
            log.warning(
                "%s: only %.1f MB free in %s; recording paused until %.1f MB are free (detection goes on)",
                self._what,
                free / 2**20,
                self._folder,
                self._min_free_bytes / 2**20,
            )
        elif free >= self._min_free_bytes and self.paused:
            self.paused = False
            log.info("%s: %.0f MB free again; recording resumes in a new file", self._what, free / 2**20)
        return not self.paused

    def close(self, timeout_s: float = 0.0) -> None:
        """Finish the file (quick: the frames are written as they come); the timeout is not needed.
        A later frame starts a new file."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
