"""What travels through streamer: frames, typed detections, results, and what an output implements.

The base of the house: plain Python and numpy, no OpenCV and no sub-package, so that every
stage (sources, the API, the live path, outputs) can share these without reaching into another.

Boxes are centre ``xywh`` (as the API sends them) in the pixels of the frame the result is for:
the API boundary rescales them once, from the image sent to the frame captured.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Protocol

import numpy as np

EMPTY: Mapping[str, Any] = MappingProxyType({})


def api_form(fields: Mapping[str, Any], extra: Mapping[str, Any] = EMPTY) -> dict[str, Any]:
    """A value in the API's own JSON form: the fields that are set, then the other fields it sent."""
    out = {key: value for key, value in fields.items() if value is not None}
    return out | {key: value for key, value in extra.items() if key not in out}


def api_predictions(
    detections: tuple[Detection, ...], labels: tuple[Label, ...], multi_label: bool
) -> list[dict[str, Any]] | dict[str, dict[str, Any]]:
    """Detections or labels in the API's own format: a list, or a dict by class (multi-label)."""
    if multi_label:
        return {label.class_name: {k: v for k, v in label.as_dict().items() if k != "class"} for label in labels}
    return [d.as_dict() for d in detections] or [label.as_dict() for label in labels]


def frozen_mapping(values: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return EMPTY if not values else MappingProxyType(dict(values))


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured image and where and when it came from."""

    source: str
    frame_id: int  # increases by one per frame read from this source
    captured_at: float  # wall clock, unix seconds
    captured_mono: float  # time.monotonic() at capture, for ages and rates
    image: np.ndarray = field(repr=False)  # BGR, height x width x 3

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


@dataclass(frozen=True, slots=True)
class Keypoint:
    x: float
    y: float
    confidence: float | None = None
    class_name: str | None = None
    class_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return api_form(
            {
                "x": self.x,
                "y": self.y,
                "confidence": self.confidence,
                "class": self.class_name,
                "class_id": self.class_id,
            }
        )


@dataclass(frozen=True, slots=True)
class Detection:
    """One box (centre xywh, frame pixels), with a polygon and keypoints where the model gives them."""

    x: float
    y: float
    width: float
    height: float
    confidence: float
    class_name: str
    class_id: int | None = None
    detection_id: str | None = None
    points: tuple[tuple[float, float], ...] | None = None  # a segmentation polygon
    keypoints: tuple[Keypoint, ...] | None = None
    track_id: int | None = None  # set by a tracker, never by the API
    extra: Mapping[str, Any] = field(default_factory=lambda: EMPTY, compare=False)  # other fields the API sent

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        """The corner box (x0, y0, x1, y1)."""
        half_w, half_h = self.width / 2, self.height / 2
        return self.x - half_w, self.y - half_h, self.x + half_w, self.y + half_h

    def scaled(self, sx: float, sy: float) -> Detection:
        """The same detection in the pixels of an image sx, sy times the size."""
        return replace(
            self,
            x=self.x * sx,
            y=self.y * sy,
            width=self.width * sx,
            height=self.height * sy,
            points=None if self.points is None else tuple((px * sx, py * sy) for px, py in self.points),
            keypoints=None
            if self.keypoints is None
            else tuple(replace(k, x=k.x * sx, y=k.y * sy) for k in self.keypoints),
        )

    def as_dict(self) -> dict[str, Any]:
        """The API's own format for one prediction (the message format)."""
        return api_form(
            {
                "x": self.x,
                "y": self.y,
                "width": self.width,
                "height": self.height,
                "confidence": self.confidence,
                "class": self.class_name,
                "class_id": self.class_id,
                "detection_id": self.detection_id,
                "track_id": self.track_id,
                "points": None if self.points is None else [{"x": px, "y": py} for px, py in self.points],
                "keypoints": None if self.keypoints is None else [k.as_dict() for k in self.keypoints],
            },
            self.extra,
        )


@dataclass(frozen=True, slots=True)
class Label:
    """One class of a classification answer, single-label or multi-label alike."""

    class_name: str
    confidence: float
    class_id: int | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: EMPTY, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return api_form(
            {"class": self.class_name, "confidence": self.confidence, "class_id": self.class_id}, self.extra
        )


@dataclass(frozen=True, slots=True)
class Result:
    """The answer for one frame: detections (boxes) or labels (a classifier), in that frame's pixels."""

    source: str
    frame_id: int
    captured_at: float
    captured_mono: float
    width: int
    height: int
    detections: tuple[Detection, ...] = ()
    labels: tuple[Label, ...] = ()  # a classification answer
    multi_label: bool = False  # labels came as the API's {class: {...}} form
    model: str = ""
    sent_at: float = 0.0
    received_at: float = 0.0
    server_time_s: float | None = None
    inference_id: str | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: EMPTY)  # other top-level response fields
    reused: bool = False  # the motion gate skipped the call: an earlier frame's answer

    def rescaled_to(self, width: int, height: int) -> Result:
        """This result for a frame of another size (a camera that came back at another resolution)."""
        if (width, height) == (self.width, self.height):
            return self
        sx, sy = width / self.width, height / self.height
        return replace(self, width=width, height=height, detections=tuple(d.scaled(sx, sy) for d in self.detections))

    def for_frame(self, frame: Frame, reused: bool = False) -> Result:
        """This answer, carried over to another frame (the motion gate's republish)."""
        return replace(
            self,
            frame_id=frame.frame_id,
            captured_at=frame.captured_at,
            captured_mono=frame.captured_mono,
            reused=reused,
        ).rescaled_to(frame.width, frame.height)

    def class_names(self) -> list[str]:
        """The class of every detection, or of every label of a classification answer."""
        return [d.class_name for d in self.detections] or [label.class_name for label in self.labels]

    def predictions(self) -> list[dict[str, Any]] | dict[str, dict[str, Any]]:
        """The predictions in the API's own format: a list, or a dict by class (multi-label)."""
        return api_predictions(self.detections, self.labels, self.multi_label)


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the publisher hands each output: one message, encoded once.

    ``kind`` is "detections" (``result`` is set) or "status" (``status`` is set).  ``message``
    is the decoded form of ``payload``: read it, never change it (every output shares it)."""

    kind: str
    payload: bytes
    message: Mapping[str, Any]
    result: Result | None = None
    status: Any = None  # a stats.Snapshot for "status"


class LiveView(Protocol):
    """What an output may read of the live run (the web page, MQTT's snapshot): never the pipeline."""

    def snapshot(self, now: float | None = None, with_cpu: bool = False) -> Any: ...  # a stats.Snapshot

    def status_message(self) -> dict[str, Any]: ...  # the heartbeat, as of now

    def annotated(self, raw: bool = False) -> Frame | None: ...  # the newest frame, drawn as the preview


class Output(Protocol):
    """What the publisher stage calls.  ``deliver`` must not block: an output that cannot take a
    message now drops it and counts it in ``dropped``.  ``close`` returns within ``timeout_s``,
    False if it could not finish (what it still held is lost)."""

    output_name: str

    def deliver(self, delivery: Delivery) -> None: ...

    @property
    def dropped(self) -> int: ...

    def close(self, timeout_s: float) -> bool | None: ...
