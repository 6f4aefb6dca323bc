"""Drawing: boxes with labels in a fixed colour per class, the status line, and a caption."""

from __future__ import annotations

import heapq
import zlib
from collections.abc import Sequence
from typing import TypeVar

import cv2
import numpy as np

from streamer.types import Detection, Label, Result

T = TypeVar("T", Detection, Label)

# A palette with distinct, bright colours (BGR); a class always maps to the same one.
PALETTE = (
    (56, 56, 255),
    (151, 157, 255),
    (31, 112, 255),
    (29, 178, 255),
    (49, 210, 207),
    (10, 249, 72),
    (23, 204, 146),
    (134, 219, 61),
    (52, 147, 26),
    (187, 212, 0),
    (168, 153, 44),
    (255, 194, 0),
    (147, 69, 52),
    (255, 115, 100),
    (236, 24, 0),
    (255, 56, 132),
    (133, 0, 82),
    (255, 56, 203),
)
FONT = cv2.FONT_HERSHEY_SIMPLEX
# Drawing costs about 30 us a box: 10,000 boxes would take 0.3 s, ten frames at 30 fps.
# Only the most confident are drawn; every box is still published.
MAX_DRAWN_BOXES = 300
MAX_LABEL_CHARS = 40  # putText renders every glyph, even off-image: a 1 MB class name takes 0.7 s


def class_colour(name: str) -> tuple[int, int, int]:
    """The colour of a class: fixed by its name, the same in every run and on every machine."""
    return PALETTE[zlib.crc32(name.encode("utf-8")) % len(PALETTE)]


def _px(value: float) -> int:
    """A pixel coordinate OpenCV accepts: a box far outside the frame is clipped, not fatal."""
    return int(max(-32768.0, min(32767.0, value)))


def _label(
    image: np.ndarray, text: str, x: int, y: int, colour: tuple[int, int, int], scale: float, min_y: int = 0
) -> None:
    thickness = max(1, round(scale * 2))
    (tw, th), base = cv2.getTextSize(text, FONT, scale, thickness)
    y_top = y - th - base - 4
    if y_top < min_y:  # no room above the box (or under the status band): go inside it
        y_top = max(min_y, y)
    cv2.rectangle(image, (x, y_top), (x + tw + 6, y_top + th + base + 4), colour, -1)
    luminance = 0.114 * colour[0] + 0.587 * colour[1] + 0.299 * colour[2]
    ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
    cv2.putText(image, text, (x + 3, y_top + th + 2), FONT, scale, ink, thickness, cv2.LINE_AA)


def most_confident(items: Sequence[T], limit: int = MAX_DRAWN_BOXES) -> list[T]:
    """At most ``limit`` detections or labels, the most confident, in their original order."""
    if len(items) <= limit:
        return list(items)
    keep = heapq.nlargest(limit, range(len(items)), key=lambda i: items[i].confidence)
    return [items[i] for i in sorted(keep)]


def _text(name: str, confidence: float) -> str:
    if len(name) > MAX_LABEL_CHARS:
        name = name[: MAX_LABEL_CHARS - 3] + "..."
    return f"{name} {confidence:.2f}"


def draw_detections(
    image: np.ndarray, detections: Sequence[Detection], labels: Sequence[Label] = (), min_y: int = 0
) -> np.ndarray:
    """Draw boxes (centre xywh, in this image's pixels), polygons and keypoints in place, and a
    classifier's labels at the top left.

    Labels stay below ``min_y`` (the status band) so that they are never hidden.  Only the
    ``MAX_DRAWN_BOXES`` most confident are drawn."""
    scale = max(0.4, min(image.shape[:2]) / 900)
    thickness = max(2, round(scale * 3))
    for i, label in enumerate(most_confident(labels)):
        colour = class_colour(label.class_name)
        _label(
            image, _text(label.class_name, label.confidence), 8, min_y + int((i + 1) * 34 * scale), colour, scale, min_y
        )
    for det in most_confident(detections):
        colour = class_colour(det.class_name)
        x0, y0, x1, y1 = (_px(v) for v in det.xyxy)
        if det.points:
            polygon = np.array([[_px(x), _px(y)] for x, y in det.points], dtype=np.int32)
            cv2.polylines(image, [polygon], True, colour, thickness, cv2.LINE_AA)
        cv2.rectangle(image, (x0, y0), (x1, y1), colour, thickness)
        for point in det.keypoints or ():
            cv2.circle(image, (_px(point.x), _px(point.y)), thickness + 2, colour, -1, cv2.LINE_AA)
        _label(image, _text(det.class_name, det.confidence), max(0, x0), max(0, y0), colour, scale, min_y)
    return image


def draw_result(image: np.ndarray, result: Result, min_y: int = 0) -> np.ndarray:
    """Draw one result (in this image's pixels) in place."""
    return draw_detections(image, result.detections, result.labels, min_y)


def _status_metrics(image: np.ndarray) -> tuple[float, int, int, int]:
    scale = max(0.45, image.shape[1] / 1800)
    thickness = max(1, round(scale * 2))
    (_, th), base = cv2.getTextSize("Ag", FONT, scale, thickness)
    return scale, thickness, th, th + base + 10


def status_band_height(image: np.ndarray) -> int:
    """Height in pixels of the band ``draw_status`` draws on this image."""
    return _status_metrics(image)[3]


def _band(
    image: np.ndarray, text: str, top: int, keep: float, tint: tuple[int, int, int], width: int | None = None
) -> np.ndarray:
    """A band of the status line's height from ``top`` (and ``width`` wide, else all across): the
    picture dimmed to ``keep`` of itself plus the rest in ``tint`` (BGR), and the text in white."""
    scale, thickness, th, band = _status_metrics(image)
    region = image[top : top + band, :width]
    region[:] = (region * keep + np.array(tint) * (1 - keep)).astype(np.uint8)
    cv2.putText(image, text, (8, top + th + 5), FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return image


def draw_status(image: np.ndarray, text: str) -> np.ndarray:
    """A dark band along the top with the status text."""
    return _band(image, text, 0, 0.35, (0, 0, 0))


def draw_notice(image: np.ndarray, text: str, top: int) -> np.ndarray:
    """A red band just under the status band, e.g. to mark the boxes shown as stale."""
    return _band(image, text, top, 0.3, (0, 0, 160))


def draw_caption(image: np.ndarray, text: str) -> np.ndarray:
    """Text on a dark box in the bottom left corner (the camera's name and the time of a
    snapshot), where boxes' labels, drawn at their top, seldom are."""
    scale, thickness, _, band = _status_metrics(image)
    text = text[:80]  # a caption, not a paragraph: putText draws every glyph, even off-image
    (tw, _), _ = cv2.getTextSize(text, FONT, scale, thickness)
    return _band(image, text, max(0, image.shape[0] - band), 0.35, (0, 0, 0), tw + 16)


def event_image(image: np.ndarray, result: Result, caption: str) -> np.ndarray:
    """A copy of ``image`` with ``result`` (in its pixels) drawn and ``caption`` in a corner:
    an event's picture, without the status band (a person reads it on a phone)."""
    out = image.copy()
    draw_result(out, result.rescaled_to(out.shape[1], out.shape[0]))
    return draw_caption(out, caption)
