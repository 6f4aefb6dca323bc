"""Box geometry for checking published predictions against a scene's known boxes."""

from __future__ import annotations

from typing import Any

from streamer.types import Detection, Keypoint


def xywh_to_xyxy(pred: dict[str, Any]) -> tuple[float, float, float, float]:
    """Corner box (x0, y0, x1, y1) from a message's centre box."""
    half_w, half_h = pred["width"] / 2, pred["height"] / 2
    return pred["x"] - half_w, pred["y"] - half_h, pred["x"] + half_w, pred["y"] + half_h


def iou_xyxy(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def detection(pred: dict[str, Any]) -> Detection:
    """A Detection from a dict in the API's format, unchecked (the overlay must survive anything)."""
    points = pred.get("points")
    return Detection(
        x=pred["x"],
        y=pred["y"],
        width=pred["width"],
        height=pred["height"],
        confidence=pred.get("confidence", 0.0),
        class_name=pred.get("class", "?"),
        points=None if points is None else tuple((p["x"], p["y"]) for p in points),
        keypoints=None if "keypoints" not in pred else tuple(Keypoint(k["x"], k["y"]) for k in pred["keypoints"]),
    )


def detections(preds: list[dict[str, Any]]) -> list[Detection]:
    return [detection(p) for p in preds]
