"""Video sources: webcam, RTSP/HTTP stream, GStreamer pipeline, video file, and the synthetic scene.

Each source opens, reads one BGR frame at a time (``None`` when a read fails or a
file ends) and closes.  Every call is bounded in time: network streams are opened
with OpenCV's open and read timeouts, files and the synthetic scene are paced to
their frame rate so that they behave like a camera.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from streamer import cvlog, gstspec
from streamer.config import Config
from streamer.errors import SourceError, UsageError
from streamer.names import source_kind
from streamer.redact import scrub, url_for_display
from streamer.sources import gstreamer
from streamer.sources.camera import CameraMode, actual_mode, apply_mode, report
from streamer.sources.probe import why_not_open, why_webcam_not_open
from streamer.sources.synthetic import SyntheticScene

log = logging.getLogger(__name__)

FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"


class Pacer:
    """Sleeps so that successive frames come ``1 / fps`` apart, like a live camera."""

    def __init__(self, fps: float, stop: threading.Event | None = None):
        self.interval_s = 1.0 / fps
        self._stop = stop or threading.Event()
        self._next = None

    def wait(self) -> None:
        now = time.monotonic()
        if self._next is None or now - self._next > 1.0:  # first frame, or fell far behind
            self._next = now
        elif self._next > now:
            self._stop.wait(self._next - now)
        self._next += self.interval_s


class SyntheticSource:
    """The built-in scene, generated at its frame rate.  Frame n of the scene is frame_id n."""

    is_file = False

    def __init__(self, width: int, height: int, fps: float, stop: threading.Event | None = None, moving: bool = True):
        self.name = "synthetic"
        self.fps = fps
        self.scene = SyntheticScene(width, height, fps, moving)
        self._pacer = Pacer(fps, stop)
        self._frame_ns = itertools.count()  # the scene's frame number of each read

    def open(self) -> None:
        pass

    def read(self) -> np.ndarray | None:
        self._pacer.wait()
        return self.scene.render(next(self._frame_ns))

    def close(self) -> None:
        pass


class CvSource:
    """A source read through ``cv2.VideoCapture``: webcam, network stream, GStreamer pipeline or file."""

    def __init__(
        self,
        uri: str,
        *,
        kind: str,
        open_timeout_s: float = 5.0,
        read_timeout_s: float = 2.0,
        rtsp_transport: str = "tcp",
        stop: threading.Event | None = None,
        mode: CameraMode | None = None,
        reported: list[str] | None = None,
    ):
        self.uri = uri
        self.kind = kind  # "webcam", "stream", "gst" or "file"
        self.name = url_for_display(uri) if kind == "stream" else scrub(uri) if kind == "gst" else uri
        self.is_file = kind == "file"
        self.fps: float | None = None
        self._open_timeout_ms, self._read_timeout_ms = int(open_timeout_s * 1000), int(read_timeout_s * 1000)
        self._rtsp_transport = rtsp_transport
        self._stop = stop
        self._cap: cv2.VideoCapture | None = None
        self._pacer: Pacer | None = None
        self._mode = mode or CameraMode()
        self._reported = [] if reported is None else reported  # the last mode logged, shared with fresh() copies
        # A camera on the network may be down when streamer starts, a webcam not plugged in yet:
        # keep trying, as after a drop, rather than exit for a service manager to restart us.
        self.retry_first_open = kind in ("stream", "webcam") or (kind == "gst" and "://" in uri)

    def fresh(self) -> CvSource:
        """An unopened copy with its own capture, for when this one is stuck in a call."""
        return CvSource(
            self.uri,
            kind=self.kind,
            open_timeout_s=self._open_timeout_ms / 1000,
            read_timeout_s=self._read_timeout_ms / 1000,
            rtsp_transport=self._rtsp_transport,
            stop=self._stop,
            mode=self._mode,
            reported=self._reported,
        )

    def open(self) -> None:
        self.close()
        cvlog.apply()
        if self.kind == "stream":
            # Must be in the environment before the first open (docs/facts.md; opencv#21558).
            os.environ.setdefault(FFMPEG_OPTIONS_ENV, f"rtsp_transport;{self._rtsp_transport}")
            # Timeouts only take effect when passed at open time (opencv#23207).
            cap = cv2.VideoCapture(
                self.uri,
                cv2.CAP_FFMPEG,
                [
                    cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                    self._open_timeout_ms,
                    cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                    self._read_timeout_ms,
                ],
            )
        elif self.kind == "gst":
            # No open or read timeout in this backend: a blocked call is the stall watchdog's.
            cap = cv2.VideoCapture(gstspec.pipeline_of(self.uri), cv2.CAP_GSTREAMER)
        else:  # a webcam by index or device, or a file (never all digits: that names a webcam)
            cap = cv2.VideoCapture(int(self.uri) if self.uri.isdigit() else self.uri)
        if not cap.isOpened():
            cap.release()
            if self.kind == "gst":
                raise SourceError(
                    f"cannot open GStreamer pipeline {self.name}; run it with gst-launch-1.0 "
                    "(fakesink in place of appsink) to see why"
                )
            why = (
                why_not_open(self.uri, min(3.0, self._open_timeout_ms / 1000))
                if self.kind == "stream"
                else why_webcam_not_open(self.uri)
                if self.kind == "webcam"
                else None
            )
            raise SourceError(f"cannot open {self.kind} {self.name}" + (f": {why}" if why else ""))
        if self.kind == "webcam":
            apply_mode(cap, self._mode)  # before the first read, and before the frame rate is read back
            line, refused = report(self.name, self._mode, actual_mode(cap))
            if line not in self._reported:  # once, and again only if a reopen gives another mode
                self._reported[:] = [line]
                (log.warning if refused else log.info)(line)
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and 0 < fps <= 240 else None
        self._pacer = Pacer(self.fps or 30.0, self._stop) if self.kind == "file" else None
        self._cap = cap

    def read(self) -> np.ndarray | None:
        """The next frame, or None when the read fails or the file ends (only after a successful open)."""
        if self._pacer is not None:
            self._pacer.wait()
        ok, image = self._cap.read()
        if not ok or image is None or image.size == 0:
            return None
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image

    def close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()


def make_source(config: Config, stop: threading.Event | None = None):
    """Build the source that ``config.source.uri`` names; a missing file is a usage error."""
    uri = config.source.uri
    kind = source_kind(uri)
    if kind == "synthetic":
        return SyntheticSource(config.synthetic.width, config.synthetic.height, config.synthetic.fps, stop)
    if kind == "file" and not Path(uri).is_file():
        raise UsageError(
            f"source.uri: video file {url_for_display(uri)!r} not found; pass a file, a webcam index (0), "
            "an rtsp:// URL or 'synthetic' to --source"
        )
    if kind == "gst":
        gstreamer.check_backend()
        gstreamer.check_pipeline(gstspec.pipeline_of(uri))  # a missing element: one line, exit 2
    return CvSource(
        uri,
        kind=kind,
        open_timeout_s=config.source.open_timeout_s,
        read_timeout_s=config.source.read_timeout_s,
        rtsp_transport=config.source.rtsp_transport,
        stop=stop,
        mode=CameraMode(config.source.width, config.source.height, config.source.fps, config.source.fourcc),
    )
