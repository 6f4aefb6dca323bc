"""A generated scene of moving coloured shapes whose true boxes are known for every frame.

The demo and the tests use it as a camera that needs no hardware; the stand-in server's
detector (``standin.detector``) finds these shapes again by colour.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True, slots=True)
class Shape:
    name: str  # the class label
    bgr: tuple[int, int, int]
    hue: int  # OpenCV hue (0..179) of bgr, used by the detector
    kind: str  # "rect" or "circle"
    size: tuple[float, float]  # fraction of frame (width, height); circles use size[1]
    band: tuple[float, float]  # the horizontal band (fractions of height) it moves in
    start: tuple[float, float]  # top-left, fraction of the free space
    speed: tuple[float, float]  # fraction of the free space per second


# Each shape keeps to its own band so that none hides another: the true box is
# always the visible one.  Bright colours on a dark grey ground let the detector
# find edges in luminance, which JPEG keeps at full resolution (chroma is halved).
SHAPES = (
    Shape("red-square", (90, 90, 250), 0, "rect", (0.16, 0.24), (0.0, 0.33), (0.05, 0.10), (0.11, 0.37)),
    Shape("green-circle", (90, 220, 90), 60, "circle", (0.0, 0.26), (0.33, 0.67), (0.60, 0.55), (-0.08, 0.41)),
    Shape("blue-box", (250, 150, 60), 105, "rect", (0.20, 0.20), (0.67, 1.0), (0.80, 0.85), (0.06, -0.33)),
)
CLASS_IDS = {shape.name: i for i, shape in enumerate(SHAPES)}


def _bounce(start: float, speed: float, t: float) -> float:
    """Position in [0, 1] of a point moving at speed that reflects off both ends."""
    p = (start + speed * t) % 2.0
    return 2.0 - p if p > 1.0 else p


class SyntheticScene:
    """Renders frame ``n`` (time n / fps) of the scene and tells where each shape is in it."""

    def __init__(self, width: int = 1280, height: int = 720, fps: float = 30.0, moving: bool = True):
        self.width, self.height, self.fps, self.moving = width, height, fps, moving
        # The background: grey only (zero saturation), so nothing in it looks like a shape to the detector.
        ramp = np.linspace(20, 50, width, dtype=np.float32)[None, :]
        rows = np.linspace(0, 15, height, dtype=np.float32)[:, None]
        self._background = cv2.cvtColor((ramp + rows).astype(np.uint8), cv2.COLOR_GRAY2BGR)
        step = max(16, width // 16)
        self._background[:, ::step] = self._background[::step] = 70  # the grid's lines, one pixel wide

    def boxes(self, frame_id: int) -> list[tuple[str, tuple[int, int, int, int]]]:
        """True corner boxes (x0, y0, x1, y1), exclusive ends, in this scene's pixels."""
        t = frame_id / self.fps if self.moving else 0.0
        out = []
        for shape in SHAPES:
            if shape.kind == "circle":
                w = h = 2 * round(shape.size[1] * self.height / 2)
            else:
                w, h = round(shape.size[0] * self.width), round(shape.size[1] * self.height)
            top, bottom = (round(f * self.height) for f in shape.band)
            x0 = round(_bounce(shape.start[0], shape.speed[0], t) * (self.width - w))
            y0 = top + round(_bounce(shape.start[1], shape.speed[1], t) * max(0, bottom - top - h))
            out.append((shape.name, (x0, y0, x0 + w, y0 + h)))
        return out

    def render(self, frame_id: int) -> np.ndarray:
        image = self._background.copy()
        for shape, (_, (x0, y0, x1, y1)) in zip(SHAPES, self.boxes(frame_id), strict=True):
            if shape.kind == "circle":
                r = (x1 - x0) // 2
                cv2.circle(image, (x0 + r, y0 + r), r, shape.bgr, -1, cv2.LINE_8)
            else:
                cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), shape.bgr, -1, cv2.LINE_8)
        scale = self.height / 720
        cv2.putText(
            image,
            f"synthetic {frame_id}",
            (int(12 * scale), self.height - int(14 * scale)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.7 * scale,
            (88, 88, 88),
            max(1, round(scale)),
            cv2.LINE_AA,
        )
        return image
