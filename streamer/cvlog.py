"""OpenCV's and FFmpeg's own log lines: off unless streamer logs at debug level.

They go straight to stderr, past streamer's log and its secret masking, and come once per
retry while a camera is down ("backend is generally available but can't be used to capture
by name", "[tcp @ 0x...] Connection refused").  OpenCV reads OPENCV_LOG_LEVEL once, when cv2
is imported, and FFmpeg's level when its backend first opens something: so ``silence`` runs
before cv2 is imported (``streamer.commands`` does it) and ``apply`` before the first open.
Whatever the user sets in the environment is left alone.
"""

from __future__ import annotations

import logging
import os

QUIET = {"OPENCV_LOG_LEVEL": "OFF", "OPENCV_FFMPEG_LOGLEVEL": "-8"}  # -8: AV_LOG_QUIET
_ours: set[str] = set()  # the variables set here, not by the user


def silence() -> None:
    """Turn OpenCV's and FFmpeg's log off, unless the environment says otherwise."""
    for name, value in QUIET.items():
        if name not in os.environ:
            os.environ[name] = value
            _ours.add(name)


def apply() -> None:
    """Before the first open (OpenCV reads FFmpeg's level when its FFmpeg backend starts, so
    before the first VideoCapture or VideoWriter): silence, or when streamer logs at debug
    level give OpenCV and FFmpeg their voice back.

    OpenCV 4.6 (Debian's) has no cv2.utils.logging: there, once cv2 is imported, only
    OPENCV_LOG_LEVEL=INFO set by the user brings OpenCV's own lines back."""
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        silence()
        return
    for name in list(_ours):
        os.environ.pop(name, None)
        _ours.discard(name)
    import cv2

    api = getattr(getattr(cv2, "utils", None), "logging", None)
    if api is not None and "OPENCV_LOG_LEVEL" not in os.environ:
        api.setLogLevel(api.LOG_LEVEL_INFO)
