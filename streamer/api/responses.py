"""Parse and check a detection API response (detection, segmentation, keypoints, classification)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from streamer.errors import ApiMalformedResponse
from streamer.types import Detection, Frame, Keypoint, Label, Result, frozen_mapping

KNOWN_TOP_LEVEL = {"predictions", "image", "time", "inference_id"}
BOX_KEYS = ("x", "y", "width", "height")
TYPED_KEYS = {*BOX_KEYS, "confidence", "class", "class_id", "detection_id", "points", "keypoints"}
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
    """A checked answer, in the pixels of the image sent."""

    detections: tuple[Detection, ...]
    labels: tuple[Label, ...]  # a classification answer
    multi_label: bool
    image_width: int | None
    image_height: int | None
    time_s: float | None
    inference_id: str | None
    extra: dict[str, Any] = field(default_factory=dict)

    def filtered(self, classes: tuple[str, ...] | list[str]) -> Parsed:
        """Only the named classes (the hosted server ignores its own ``classes`` parameter)."""
        if not classes:
            return self
        return replace(
            self,
            detections=tuple(d for d in self.detections if d.class_name in classes),
            labels=tuple(label for label in self.labels if label.class_name in classes),
        )

    def result_for(
        self, frame: Frame, sent_size: tuple[int, int], model: str, sent_at: float, received_at: float
    ) -> Result:
        """The Result for the frame that was sent, its boxes rescaled once into the frame's pixels."""
        sx, sy = frame.width / (self.image_width or sent_size[0]), frame.height / (self.image_height or sent_size[1])
        return Result(
            source=frame.source,
            frame_id=frame.frame_id,
            captured_at=frame.captured_at,
            captured_mono=frame.captured_mono,
            width=frame.width,
            height=frame.height,
            detections=self.detections if (sx, sy) == (1.0, 1.0) else tuple(d.scaled(sx, sy) for d in self.detections),
            labels=self.labels,
            multi_label=self.multi_label,
            model=model,
            sent_at=sent_at,
            received_at=received_at,
            server_time_s=self.time_s,
            inference_id=self.inference_id,
            extra=frozen_mapping(self.extra),
        )


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _keypoint(point: dict) -> Keypoint:
    name, confidence = point.get("class"), point.get("confidence")
    return Keypoint(
        float(point["x"]),
        float(point["y"]),
        float(confidence) if _finite(confidence) else None,
        name if isinstance(name, str) else None,
        _int(point.get("class_id")),
    )


def _detection(pred: dict) -> Detection:
    points, keypoints, detection_id = pred.get("points"), pred.get("keypoints"), pred.get("detection_id")
    return Detection(
        x=float(pred["x"]),
        y=float(pred["y"]),
        width=float(pred["width"]),
        height=float(pred["height"]),
        confidence=float(pred["confidence"]),
        class_name=pred["class"],
        class_id=_int(pred.get("class_id")),
        detection_id=detection_id if isinstance(detection_id, str) else None,
        points=None if points is None else tuple((float(p["x"]), float(p["y"])) for p in points),
        keypoints=None if keypoints is None else tuple(_keypoint(p) for p in keypoints),
        extra=frozen_mapping({k: v for k, v in pred.items() if k not in TYPED_KEYS}),
    )


def _label(name: str, value: dict) -> Label:
    return Label(
        name,
        float(value["confidence"]),
        _int(value.get("class_id")),
        frozen_mapping({k: v for k, v in value.items() if k not in ("class", "confidence", "class_id")}),
    )


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
    if points is not None and not isinstance(points, list):
        raise _bad(f"predictions[{index}].{key} is not a list")
    for point in points or ():
        if not isinstance(point, dict) or not (_finite(point.get("x")) and _finite(point.get("y"))):
            raise _bad(f"predictions[{index}].{key} holds a point without numeric x and y")
        if max(abs(point["x"]), abs(point["y"])) > MAX_COORDINATE_PX:
            raise _bad(f"predictions[{index}].{key} holds a point beyond {MAX_COORDINATE_PX} px")


def _check_detection(pred: dict, index: int) -> None:
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
    detections: tuple[Detection, ...] = ()
    labels: tuple[Label, ...] = ()
    if isinstance(preds, dict):  # multi-label classification: {class: {confidence, class_id}}
        for name, value in preds.items():
            if not isinstance(value, dict) or not _finite(value.get("confidence")):
                raise _bad(f"predictions[{name[:40]!r}] has no numeric confidence")
        labels = tuple(_label(name, value) for name, value in preds.items())
    elif isinstance(preds, list):
        # A box with a key missing is a broken box, not a classification label.
        is_boxes = any(isinstance(p, dict) and any(k in p for k in BOX_KEYS) for p in preds)
        for i, pred in enumerate(preds):
            if not isinstance(pred, dict):
                raise _bad(f"predictions[{i}] is {_json_type(pred)}, not an object")
            (_check_detection if is_boxes else _check_label)(pred, i)
        if is_boxes:
            detections = tuple(_detection(p) for p in preds)
        else:
            labels = tuple(_label(p["class"], p) for p in preds)
    else:
        raise _bad(f"'predictions' is {_json_type(preds)}, not a list")

    image = data["image"] if isinstance(data.get("image"), dict) else {}
    w, h = image.get("width"), image.get("height")
    size = (int(w), int(h)) if _finite(w) and _finite(h) and w > 0 and h > 0 else (None, None)
    return Parsed(
        detections,
        labels,
        isinstance(preds, dict),
        *size,
        time_s=data.get("time") if _finite(data.get("time")) else None,
        inference_id=data.get("inference_id") if isinstance(data.get("inference_id"), str) else None,
        extra={k: v for k, v in data.items() if k not in KNOWN_TOP_LEVEL},
    )
