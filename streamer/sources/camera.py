"""Webcam settings: ask for a mode (pixel format first), then say what the camera really gave.

A camera treats these as requests: it picks the nearest mode it has, and OpenCV's ``set`` returns
True either way, so the only truth is what ``get`` reads back after the open.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2


@dataclass(frozen=True)
class CameraMode:
    """A webcam mode; None leaves that part to the camera."""

    width: int | None = None
    height: int | None = None
    fps: float | None = None
    fourcc: str | None = None


def fourcc_text(code: float) -> str | None:
    """The four characters of a CAP_PROP_FOURCC value, or None when the backend gives none."""
    value = int(code) if code and code > 0 else 0
    chars = "".join(chr((value >> (8 * i)) & 0xFF) for i in range(4))
    return chars if value and all(" " <= c <= "~" for c in chars) else None


def apply_mode(cap, mode: CameraMode) -> None:
    """Ask ``cap`` (just opened, not yet read) for ``mode``.

    The pixel format goes first: with V4L2 it decides which sizes and rates exist (a USB camera
    offers 1080p at 30 fps only in MJPG), so a size asked before it may be refused."""
    fourcc = None if mode.fourcc is None else cv2.VideoWriter_fourcc(*mode.fourcc)
    for prop, value in (
        (cv2.CAP_PROP_FOURCC, fourcc),
        (cv2.CAP_PROP_FRAME_WIDTH, mode.width),
        (cv2.CAP_PROP_FRAME_HEIGHT, mode.height),
        (cv2.CAP_PROP_FPS, mode.fps),
    ):
        if value is not None:
            cap.set(prop, value)


def actual_mode(cap) -> CameraMode:
    """What ``cap`` reports it delivers (0 or less from the backend means unknown)."""
    width, height, fps = (cap.get(p) for p in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT, cv2.CAP_PROP_FPS))
    return CameraMode(
        width=int(width) if width > 0 else None,
        height=int(height) if height > 0 else None,
        fps=fps if fps > 0 else None,
        fourcc=fourcc_text(cap.get(cv2.CAP_PROP_FOURCC)),
    )


def describe(mode: CameraMode) -> str:
    """``1920x1080 @ 30 fps MJPG``, with ``?`` for what is unknown."""
    size = f"{mode.width or '?'}x{mode.height or '?'}"
    fps = f"{mode.fps:g}" if mode.fps else "?"
    return f"{size} @ {fps} fps {mode.fourcc or '(format unknown)'}"


def _same(key: str, want: object, got: object) -> bool:
    # Drivers report 29.97 or 30.00003 for 30 fps: within 1 % is the same.
    return abs(float(want) - float(got)) <= 0.01 * float(want) + 1e-9 if key == "fps" else want == got


def report(name: str, asked: CameraMode, got: CameraMode) -> tuple[str, bool]:
    """The log line about what a webcam gave, and what was asked when that differs, and
    whether the camera refused something asked.  A value the camera does not report is said
    so, and is not taken for a refusal."""
    line = f"webcam {name} gives {describe(got)}"
    wanted = {key: want for key, want in vars(asked).items() if want is not None}
    shown = {key: f"{key} {want:g}" if isinstance(want, float) else f"{key} {want}" for key, want in wanted.items()}
    unknown = [shown[key] for key in wanted if getattr(got, key) is None]
    differs = [
        shown[key]
        for key, want in wanted.items()
        if getattr(got, key) is not None and not _same(key, want, getattr(got, key))
    ]
    if differs:
        line += f" (asked for {', '.join(differs)}: not a mode it has; v4l2-ctl --list-formats-ext lists them)"
    if unknown:
        line += f" (asked for {', '.join(unknown)}: the camera does not report it)"
    return line, bool(differs)
