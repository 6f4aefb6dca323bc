"""GStreamer sources: ``gst:PIPELINE``, read through OpenCV's GStreamer backend.

The pipeline is the user's (a Pi Camera through libcamerasrc, a Jetson CSI camera, RTSP with a
hardware decoder); OpenCV takes frames from its last element, which must be an ``appsink``.  Only
some OpenCV builds have the backend: Debian's and Raspberry Pi OS's python3-opencv and JetPack's
do, the pip wheels do not.  The text checks of a pipeline are in streamer/gstspec.py.

OpenCV says only that a pipeline did not open (and GStreamer prints CRITICAL blocks about it), so
before the first open the pipeline is built once by GStreamer's own parser, as gst-launch-1.0
does: through python3-gi when it is importable (a venv made with --system-site-packages sees it),
else by asking ``gst-inspect-1.0`` about each element.  Its error (``no element "v4l2h264dec"``)
is then the one line the user sees.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import cv2

from streamer.errors import ConfigError
from streamer.redact import scrub

NO_GSTREAMER = (
    "this OpenCV ({version}) was built without GStreamer, which gst: sources need; use Debian's or "
    "Raspberry Pi OS's python3-opencv (apt install python3-opencv, then a venv made with "
    "--system-site-packages, with no OpenCV wheel in it) or JetPack's OpenCV"
)
INSPECT_TIMEOUT_S = 5.0  # gst-inspect-1.0 may rebuild the plugin registry on its first run
_ELEMENT = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


def has_gstreamer(build_information: str) -> bool:
    """Whether ``cv2.getBuildInformation()`` says the GStreamer backend is built in."""
    return re.search(r"^\s*GStreamer:\s*YES", build_information, re.MULTILINE) is not None


def check_backend() -> None:
    """Raise ConfigError (exit 2) when this cv2 cannot open a gst: source."""
    if not has_gstreamer(cv2.getBuildInformation()):
        raise ConfigError("source.uri: " + NO_GSTREAMER.format(version=cv2.__version__))


def check_pipeline(pipeline: str) -> None:
    """Raise ConfigError (exit 2) when GStreamer cannot build ``pipeline``: an element that is not
    installed, a property an element lacks, a syntax error.  Says nothing when neither python3-gi
    nor gst-inspect-1.0 is there to ask: OpenCV's open then fails as before."""
    problem = parse_problem(pipeline) or missing_element(pipeline)  # GStreamer's errors are never empty
    if problem is not None:
        raise ConfigError(f"source.uri: GStreamer cannot build the gst: pipeline: {scrub(problem)}{_hint(problem)}")


def _hint(problem: str) -> str:
    if problem.startswith("no element"):
        return (
            " (not installed here: gst-inspect-1.0 lists the elements that are; "
            "the gstreamer1.0-plugins-* packages add more)"
        )
    return " (gst-launch-1.0 with the same pipeline, fakesink in place of appsink, says the same)"


def parse_problem(pipeline: str) -> str | None:
    """GStreamer's parser's error for ``pipeline`` (``no element "x"``), or None when it builds
    or when python3-gi is not importable.  The pipeline is only built, never started."""
    try:
        import gi

        gi.require_version("Gst", "1.0")
        from gi.repository import GLib, Gst
    except (ImportError, ValueError):
        return None
    if not Gst.init_check(None):
        return None
    try:
        built = Gst.parse_launch(pipeline)
    except GLib.Error as exc:
        return exc.message
    built.set_state(Gst.State.NULL)  # never started; NULL before the last reference goes
    return None


def element_names(pipeline: str) -> list[str]:
    """The factory names of a pipeline's elements, as far as text tells: the first word of each
    ``!``-separated part that is not caps (``video/x-raw,...``) or a pad reference (``t.``)."""
    parts = [part.split() for part in pipeline.split("!")]
    return list(dict.fromkeys(words[0] for words in parts if words and _ELEMENT.fullmatch(words[0])))  # once each


def missing_element(pipeline: str) -> str | None:
    """``no element "x"`` for the first element gst-inspect-1.0 does not know, or None when all
    are known or gst-inspect-1.0 is not installed."""
    inspect = shutil.which("gst-inspect-1.0")
    if inspect is None:
        return None
    for name in element_names(pipeline):
        try:
            found = subprocess.run(
                [inspect, "--exists", name], capture_output=True, timeout=INSPECT_TIMEOUT_S
            ).returncode
        except (OSError, subprocess.TimeoutExpired):
            return None
        if found != 0:
            return f'no element "{name}"'
    return None
