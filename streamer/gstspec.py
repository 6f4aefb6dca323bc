"""What a ``gst:PIPELINE`` source must look like: checked as text, so no GStreamer is needed.

The config layer checks a ``gst:`` source with this; ``sources/gstreamer.py`` opens it.
"""

from __future__ import annotations

PREFIX = "gst:"
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
