"""GStreamer sources: ``gst:PIPELINE``, read through OpenCV's GStreamer backend.

The pipeline is the user's (a Pi Camera through libcamerasrc, a Jetson CSI camera, RTSP with a
hardware decoder); OpenCV takes frames from its last element, which must be an ``appsink``.  Only
some OpenCV builds have the backend: Debian's and Raspberry Pi OS's python3-opencv and JetPack's
do, the pip wheels do not.  The text checks of a pipeline are in streamer/gstspec.py.
"""

from __future__ import annotations

import re

NO_GSTREAMER = (
    "this OpenCV ({version}) was built without GStreamer, which gst: sources need; use Debian's or "
    "Raspberry Pi OS's python3-opencv (apt install python3-opencv, then a venv made with "
    "--system-site-packages, with no OpenCV wheel in it) or JetPack's OpenCV"
)


def has_gstreamer(build_information: str) -> bool:
    """Whether ``cv2.getBuildInformation()`` says the GStreamer backend is built in."""
    return re.search(r"^\s*GStreamer:\s*YES", build_information, re.MULTILINE) is not None


def check_backend() -> None:
    """Raise ConfigError (exit 2) when this cv2 cannot open a gst: source."""
    import cv2

    from streamer.errors import ConfigError

    if not has_gstreamer(cv2.getBuildInformation()):
        raise ConfigError("source.uri: " + NO_GSTREAMER.format(version=cv2.__version__))
