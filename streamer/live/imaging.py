"""Pure image work for upload: resize (never upscale), JPEG-encode, and map boxes back."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np


@dataclass(frozen=True, slots=True)
class Upload:
    """An encoded image ready to send, and the sizes needed to map its boxes back."""

    body: bytes  # base64 text of the JPEG, as the API wants it
    jpeg_bytes: int
    sent_width: int
    sent_height: int
    original_width: int
    original_height: int


def limit_opencv_threads() -> None:
    """Run OpenCV's own work on the calling thread, unless $OPENCV_FOR_THREADS_NUM says otherwise.

    streamer already works in parallel (capture, requests, output).  OpenCV's thread pool on
    top of that spins while it waits for work: on a 2-core machine it costs about 1.7 times
    the CPU for the same resize and encode, and takes cores from the other threads."""
    if "OPENCV_FOR_THREADS_NUM" not in os.environ:
        cv2.setNumThreads(1)


def fit_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The size with the longest side at most max_side, aspect ratio kept, never larger."""
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_for_upload(image: np.ndarray, max_side: int) -> np.ndarray:
    height, width = image.shape[:2]
    new_w, new_h = fit_size(width, height, max_side)
    if (new_w, new_h) == (width, height):
        return image
    # INTER_AREA is the right filter for shrinking: no aliasing on fine detail.
    return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("cv2.imencode could not encode the frame as JPEG")
    return buf.tobytes()


def prepare_upload(image: np.ndarray, max_side: int, quality: int) -> Upload:
    """Resize, encode and base64 one frame (only the resized copy is encoded)."""
    height, width = image.shape[:2]
    small = resize_for_upload(image, max_side)
    jpeg = encode_jpeg(small, quality)
    return Upload(
        body=base64.b64encode(jpeg),
        jpeg_bytes=len(jpeg),
        sent_width=int(small.shape[1]),
        sent_height=int(small.shape[0]),
        original_width=int(width),
        original_height=int(height),
    )


def _scale_xy(point: dict[str, Any], sx: float, sy: float) -> dict[str, Any]:
    out = dict(point)
    if "x" in out:
        out["x"] = out["x"] * sx
    if "y" in out:
        out["y"] = out["y"] * sy
    return out


def scale_predictions(predictions: list[dict[str, Any]], sx: float, sy: float) -> list[dict[str, Any]]:
    """Map predictions from sent-image pixels to original pixels: boxes (centre xywh),
    polygon ``points`` and ``keypoints``.  Every other field is kept as the API sent it."""
    if sx == 1.0 and sy == 1.0:
        return predictions
    scaled = []
    for pred in predictions:
        out = _scale_xy(pred, sx, sy)
        if "width" in out:
            out["width"] = out["width"] * sx
        if "height" in out:
            out["height"] = out["height"] * sy
        for key in ("points", "keypoints"):
            if isinstance(out.get(key), list):
                out[key] = [_scale_xy(p, sx, sy) for p in out[key]]
        scaled.append(out)
    return scaled


def xywh_to_xyxy(pred: dict[str, Any]) -> tuple[float, float, float, float]:
    """Corner box (x0, y0, x1, y1) from the API's centre box."""
    half_w, half_h = pred["width"] / 2, pred["height"] / 2
    return pred["x"] - half_w, pred["y"] - half_h, pred["x"] + half_w, pred["y"] + half_h


def iou_xyxy(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
