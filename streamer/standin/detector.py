"""The stand-in server's detector: it finds the synthetic scene's shapes again by colour.

It is not a general object detector: it knows only the shapes in ``sources.synthetic``.
"""

from __future__ import annotations

import cv2
import numpy as np

from streamer.sources.synthetic import CLASS_IDS, SHAPES, Shape


def detect(image: np.ndarray, min_area_fraction: float = 0.002) -> list[dict]:
    """Find the scene's shapes by colour; predictions in the API's format, in image pixels."""
    # Extent from luminance, thresholded half-way between the ground (<= 70) and the
    # shapes (>= 130) so blurred edges split evenly; class from the component's hue.
    mask = (cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) > 100).astype(np.uint8)
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    min_area = min_area_fraction * image.shape[0] * image.shape[1]
    predictions = []
    for i in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[i])
        if area < min_area:
            continue  # text and noise
        pixels = hsv[labels == i]
        if np.median(pixels[:, 1]) < 80:
            continue  # grey: not a shape
        shape = _nearest_hue(int(np.median(pixels[:, 0])))
        if shape is None:
            continue
        predictions.append(
            {
                "x": x + w / 2,
                "y": y + h / 2,
                "width": float(w),
                "height": float(h),
                "confidence": round(min(0.99, 0.55 + 0.45 * area / (w * h)), 3),  # by how much of its box it fills
                "class": shape.name,
                "class_id": CLASS_IDS[shape.name],
            }
        )
    return predictions


def _nearest_hue(hue: int) -> Shape | None:
    def distance(shape: Shape) -> int:
        apart = abs(hue - shape.hue)
        return min(apart, 180 - apart)  # hue is circular

    nearest = min(SHAPES, key=distance)
    return nearest if distance(nearest) < 16 else None
