"""Parse and check a detection API response (detection, segmentation, keypoints, classification)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from streamer.errors import ApiMalformedResponse

KNOWN_TOP_LEVEL = {"predictions", "image", "time", "inference_id"}
BOX_KEYS = ("x", "y", "width", "height")
# No image is a million pixels wide: a coordinate or size past this is nonsense, and once
# scaled to the frame it could overflow to inf, which no JSON consumer can read.
MAX_COORDINATE_PX = 1_000_000
_JSON_TYPES = {
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
    list: "a list",
    dict: "an object",
}


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
    """A JSON number usable as a float: not NaN/inf, and not an integer too long for a
    float (json reads 1e400 as inf but 1 followed by 400 zeros as an int)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


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
        if max(abs(point["x"]), abs(point["y"])) > MAX_COORDINATE_PX:
            raise _bad(f"predictions[{index}].{key} holds a point beyond {MAX_COORDINATE_PX} px")


def _check_detection(pred: Any, index: int) -> None:
    if not isinstance(pred, dict):
        raise _bad(f"predictions[{index}] is {_json_type(pred)}, not an object")
    for key in BOX_KEYS:
        if not _finite(pred.get(key)):
            raise _bad(f"predictions[{index}].{key} is not a finite number")
        if abs(pred[key]) > MAX_COORDINATE_PX:
            raise _bad(f"predictions[{index}].{key} is {pred[key]:g}, beyond {MAX_COORDINATE_PX} px")
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
        raise _bad(f"expected a JSON object, got {_json_type(data)}")
    if "predictions" not in data:
        raise _bad("no 'predictions' field")
    preds = data["predictions"]
    if isinstance(preds, dict):  # multi-label classification: {class: {confidence, class_id}}
        for name, value in preds.items():
            if not isinstance(value, dict) or not _finite(value.get("confidence")):
                raise _bad(f"predictions[{name[:40]!r}] has no numeric confidence")
        kind = "classification"
    elif isinstance(preds, list):
        # A box with a key missing is a broken box, not a classification label.
        is_boxes = any(isinstance(p, dict) and any(k in p for k in BOX_KEYS) for p in preds)
        for i, pred in enumerate(preds):
            if is_boxes:
                _check_detection(pred, i)
            elif not isinstance(pred, dict):
                raise _bad(f"predictions[{i}] is {_json_type(pred)}, not an object")
            else:
                _check_label(pred, i)
        kind = "detection" if is_boxes or not preds else "classification"
    else:
        raise _bad(f"'predictions' is {_json_type(preds)}, not a list")

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
