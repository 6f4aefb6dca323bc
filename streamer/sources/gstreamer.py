"""GStreamer sources: ``gst:PIPELINE``, read through OpenCV's GStreamer backend.

The pipeline is the user's (a Pi Camera through libcamerasrc, a Jetson CSI camera, RTSP with a
hardware decoder); OpenCV takes frames from its last element, which must be an ``appsink``.  Only
some OpenCV builds have the backend: Debian's and Raspberry Pi OS's python3-opencv and JetPack's
do, the pip wheels do not.  This module does not import cv2 at load time, so that config.py may
use the pipeline check.
"""

from __future__ import annotations

import re

PREFIX = "gst:"
NO_GSTREAMER = (
    "this OpenCV ({version}) was built without GStreamer, which gst: sources need; use Debian's or "
    "Raspberry Pi OS's python3-opencv (apt install python3-opencv, then a venv made with "
    "--system-site-packages and pip install streamer, with no OpenCV wheel) or JetPack's OpenCV"
)
EXAMPLE = "gst:videotestsrc ! videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1"


def is_pipeline(uri: str) -> bool:
    return uri.startswith(PREFIX)


def pipeline_of(uri: str) -> str:
    return uri[len(PREFIX) :].strip()


def pipeline_problem(uri: str) -> str | None:
    """None if ``gst:PIPELINE`` is usable as written, else why not (for a config error)."""
    pipeline = pipeline_of(uri)
    if not pipeline:
        return f"expected a GStreamer pipeline after gst:, e.g. {EXAMPLE!r}"
    last = pipeline.rsplit("!", 1)[-1].split()
    if not last or last[0] != "appsink":
        return (
            "expected a GStreamer pipeline ending in appsink (OpenCV takes its frames there), e.g. "
            "'... ! videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1 sync=false'"
        )
    return None


def has_gstreamer(build_information: str) -> bool:
    """Whether ``cv2.getBuildInformation()`` says the GStreamer backend is built in."""
    return re.search(r"^\s*GStreamer:\s*YES", build_information, re.MULTILINE) is not None


def check_backend() -> None:
    """Raise ConfigError (exit 2) when this cv2 cannot open a gst: source."""
    import cv2

    from streamer.errors import ConfigError

    if not has_gstreamer(cv2.getBuildInformation()):
        raise ConfigError("source.uri: " + NO_GSTREAMER.format(version=cv2.__version__))
