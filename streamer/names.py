"""Safe names: a camera's name and class names turned into slugs fit for MQTT topics and
Home Assistant ids ([a-z0-9_-], bounded, never empty), and the kind of source a URI names."""

from __future__ import annotations

import hashlib
import re
from pathlib import PurePath
from urllib.parse import urlsplit

from streamer import gstspec
from streamer.redact import GST_VALUE, gst_value

MAX_NAME = 64  # a camera name or a class slug, in characters
_UNSAFE = re.compile(r"[^a-z0-9_-]+")
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


def slug(text: str, max_len: int = MAX_NAME, sep: str = "-") -> str:
    """``text`` lowercased, each run of other characters than [a-z0-9_-] made one ``sep``,
    trimmed of separators at either end and cut to ``max_len``; "" if nothing is left."""
    cleaned = _UNSAFE.sub(sep, text.lower()).strip("-_")
    return cleaned[:max_len].strip("-_")


def class_slug(name: object) -> str:
    """A class name from the API (untrusted: it may hold "/", "+", "#", a NUL or a thousand
    characters) as one topic level and id part.  Never empty: a name with nothing usable
    becomes "class-" and a digest of it.  Two names may share a slug; that is tolerated."""
    text = str(name)
    return slug(text, sep="_") or "class-" + hashlib.sha1(text.encode("utf-8", "replace")).hexdigest()[:8]


# What names a gst: source: a location (a URL or a file), a uri or a device in its first element.
_GST_WHERE = re.compile(r"(?:^|\s)(?:location|uri|device)\s*=\s*" + GST_VALUE)


def _gst_name(pipeline: str) -> str:
    """A gst: source's name, from its first element (the source): its location=, uri= or
    device= (a URL's host and path, never its user or password), or else the element's name
    ("libcamerasrc"); never the whole pipeline."""
    first = pipeline.split("!", 1)[0]
    where = _GST_WHERE.search(first)
    return source_name(gst_value(where)) if where else slug((first.split() or [""])[0])


def source_name(uri: str) -> str:
    """The default camera name, from the source: "synthetic", "video0" for webcam 0 or
    /dev/video0, host and path for a stream URL (never its user, password or query), the
    stem of a video file, and for a gst: pipeline the same from its location= or device=, or
    else its first element."""
    uri = uri.strip()
    if uri.startswith("gst:"):
        return _gst_name(uri[4:]) or "camera"
    if uri.isdigit():
        return f"video{int(uri)}"
    if "://" in uri:
        try:
            parts = urlsplit(uri)
            name = slug(f"{parts.hostname or ''} {parts.path}")
        except ValueError:  # not a URL after all ("rtsp://[cam"): the open will say so
            name = ""
    else:
        if re.search(r":[^/]*@", uri):  # a mistyped URL's user:password@ is no part of a name
            uri = uri.rpartition("@")[2]
        name = slug(PurePath(uri).stem if PurePath(uri).suffix else PurePath(uri).name)
    return name or "camera"


def source_kind(uri: str) -> str:
    """Which kind of source a --source value names: synthetic, webcam, stream, gst or file."""
    lowered = uri.lower()
    if lowered == "synthetic":
        return "synthetic"
    if gstspec.is_pipeline(uri):
        return "gst"
    if uri.isdigit() or re.fullmatch(r"/dev/video[0-9]+", uri):
        return "webcam"
    if lowered.startswith(STREAM_SCHEMES):
        return "stream"
    return "file"
