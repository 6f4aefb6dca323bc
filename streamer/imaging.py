"""Image work every stage shares: resize (never upscale) and JPEG-encode, for upload and for viewing."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True, slots=True)
class Upload:
    """An encoded image ready to send, and the sizes needed to map its boxes back."""

    body: bytes  # base64 text of the JPEG, as the API wants it
    sent_width: int
    sent_height: int


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


def encode_jpeg(image: np.ndarray, quality: int, max_side: int | None = None) -> bytes:
    """``image`` (BGR) as JPEG bytes, first shrunk to ``max_side`` pixels on its longest side if given."""
    if max_side is not None:
        image = resize_for_upload(image, max_side)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("cv2.imencode could not encode the frame as JPEG")
    return buf.tobytes()


def prepare_upload(image: np.ndarray, max_side: int, quality: int) -> Upload:
    """Resize, encode and base64 one frame (only the resized copy is encoded)."""
    small = resize_for_upload(image, max_side)
    return Upload(
        body=base64.b64encode(encode_jpeg(small, quality)),
        sent_width=int(small.shape[1]),
        sent_height=int(small.shape[0]),
    )
