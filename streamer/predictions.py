"""Parse and check a detection API response (detection, segmentation, keypoints, classification)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from streamer.errors import ApiMalformedResponse

KNOWN_TOP_LEVEL = {"predictions", "image", "time", "inference_id"}


@dataclass(frozen=True, slots=True)
class Parsed:
    kind: str  # "detection" or "classification"
    predictions: Any  # list of dicts; a dict keyed by class for multi-label classification
    image_width: int | None
    image_height: int | None
    time_s: float | None
    inference_id: str | None
    extra: dict[str, Any] = field(default_factory=dict)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _bad(reason: str) -> ApiMalformedResponse:
    return ApiMalformedResponse(f"malformed API response: {reason}")


def _check_points(pred: dict, key: str, index: int) -> None:
    points = pred.get(key)
    if points is None:
        return
    if not isinstance(points, list):
        raise _bad(f"predictions[{index}].{key} is not a list")
    for point in points:
        if not isinstance(point, dict) or not (_finite(point.get("x")) and _finite(point.get("y"))):
            raise _bad(f"predictions[{index}].{key} holds a point without numeric x and y")


def _check_detection(pred: Any, index: int) -> None:
    if not isinstance(pred, dict):
        raise _bad(f"predictions[{index}] is not an object")
    for key in ("x", "y", "width", "height"):
        if not _finite(pred.get(key)):
            raise _bad(f"predictions[{index}].{key} is not a finite number")
    if pred["width"] < 0 or pred["height"] < 0:
        raise _bad(f"predictions[{index}] has a negative size")
    _check_label(pred, index)
    _check_points(pred, "points", index)
    _check_points(pred, "keypoints", index)


def _check_label(pred: dict, index: int) -> None:
    if not isinstance(pred.get("class"), str):
        raise _bad(f"predictions[{index}].class is not a string")
    if not _finite(pred.get("confidence")):
        raise _bad(f"predictions[{index}].confidence is not a finite number")


def parse_response(data: Any) -> Parsed:
    """Check the shape of a decoded JSON response; raise ApiMalformedResponse if it is off."""
    if not isinstance(data, dict):
        raise _bad(f"expected a JSON object, got {type(data).__name__}")
    if "predictions" not in data:
        raise _bad("no 'predictions' field")
    preds = data["predictions"]
    if isinstance(preds, dict):  # multi-label classification: {class: {confidence, class_id}}
        for name, value in preds.items():
            if not isinstance(value, dict) or not _finite(value.get("confidence")):
                raise _bad(f"predictions[{name!r}] has no numeric confidence")
        kind = "classification"
    elif isinstance(preds, list):
        is_boxes = any(isinstance(p, dict) and "x" in p for p in preds)
        for i, pred in enumerate(preds):
            if is_boxes:
                _check_detection(pred, i)
            elif not isinstance(pred, dict):
                raise _bad(f"predictions[{i}] is not an object")
            else:
                _check_label(pred, i)
        kind = "detection" if is_boxes or not preds else "classification"
    else:
        raise _bad(f"'predictions' is a {type(preds).__name__}, not a list")

    width = height = None
    image = data.get("image")
    if isinstance(image, dict):
        w, h = image.get("width"), image.get("height")
        if _finite(w) and _finite(h) and w > 0 and h > 0:
            width, height = int(w), int(h)
    time_s = data.get("time") if _finite(data.get("time")) else None
    inference_id = data.get("inference_id") if isinstance(data.get("inference_id"), str) else None
    extra = {k: v for k, v in data.items() if k not in KNOWN_TOP_LEVEL}
    return Parsed(kind, preds, width, height, time_s, inference_id, extra)


def filter_classes(predictions: Any, classes: list[str]) -> Any:
    """Keep only the named classes (the hosted server ignores its own ``classes`` parameter)."""
    if not classes:
        return predictions
    wanted = set(classes)
    if isinstance(predictions, dict):
        return {k: v for k, v in predictions.items() if k in wanted}
    return [p for p in predictions if p.get("class") in wanted]
