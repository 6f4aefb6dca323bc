"""Where results go: the ZeroMQ PUB feed, a JSONL file and a recorded video.

A message is one result as JSON (see README, "Message format"); on ZeroMQ it is sent
as two frames, the topic then the UTF-8 JSON.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import IO, Any, Callable

import cv2
import numpy as np
import zmq

from streamer.errors import UsageError
from streamer.frames import Result

log = logging.getLogger(__name__)

MESSAGE_TYPE = "detections"


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN/inf become null, so every consumer can parse the line."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def result_message(result: Result, published_at: float | None = None) -> dict[str, Any]:
    """The message for one result; boxes are centre xywh in original-frame pixels.

    Other top-level fields the API sent (e.g. a classifier's ``top`` and ``confidence``)
    are passed on too, unless they would clash with one of ours."""
    message = {
        "type": MESSAGE_TYPE,
        "source": result.source,
        "frame_id": result.frame_id,
        "captured_at": round(result.captured_at, 6),
        "sent_at": round(result.sent_at, 6),
        "received_at": round(result.received_at, 6),
        "published_at": round(time.time() if published_at is None else published_at, 6),
        "image": {"width": result.width, "height": result.height},
        "model": result.model,
        "inference_id": result.inference_id,
        "server_time": result.server_time_s,
        "predictions": result.predictions,
    }
    for key, value in result.extra.items():
        message.setdefault(key, value)
    return _clean(message)


def encode_message(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode("utf-8")


class ZmqPublisher:
    """A PUB socket that never blocks the pipeline: bounded queue, non-blocking send, linger 0."""

    def __init__(self, endpoint: str, topic: str = "detections", sndhwm: int = 100):
        self.endpoint = endpoint
        self.topic = topic.encode("utf-8")
        self.dropped = 0
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.PUB)
        self._sock.setsockopt(zmq.SNDHWM, sndhwm)
        self._sock.setsockopt(zmq.LINGER, 0)
        try:
            self._sock.bind(endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise UsageError(f"output.zmq: cannot bind {endpoint}: {exc}; choose another port "
                             "or stop the program using it") from None
        log.info("publishing detections on %s (topic %r)", endpoint, topic)

    def send(self, payload: bytes) -> bool:
        try:
            self._sock.send_multipart([self.topic, payload], flags=zmq.NOBLOCK)
            return True
        except zmq.Again:  # a subscriber's queue is full: drop rather than wait
            self.dropped += 1
            return False

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None


class JsonlWriter:
    """Appends one message per line, flushed, so a reader (or a crash) never sees half a line."""

    def __init__(self, path: str, append: bool = True):
        try:
            self._file: IO[bytes] | None = open(path, "ab" if append else "wb")
        except OSError as exc:
            raise UsageError(f"output.jsonl: cannot open {path}: {exc.strerror or exc}") from None

    def send(self, payload: bytes) -> bool:
        assert self._file is not None
        self._file.write(payload + b"\n")
        self._file.flush()
        return True

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


FOURCC = {".mp4": "mp4v", ".avi": "MJPG"}  # the wheels carry no H.264 encoder (field notes)


class Recorder:
    """Writes annotated frames to a video; opened on the first frame, at the source's rate.

    ``fps`` may be a callable: it is asked on the first frame, once the source is open and
    knows its own rate.  ``what`` names the option in error messages."""

    def __init__(self, path: str, fps: float | Callable[[], float | None], what: str = "output.record"):
        self.path = path
        self._fps = fps
        self.fps: float | None = None
        self._what = what
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        self._start: float | None = None
        self._written = 0
        suffix = Path(path).suffix.lower()
        if suffix not in FOURCC:
            raise UsageError(f"{what}: {path}: expected a file name ending in .mp4 or .avi")
        self._fourcc = cv2.VideoWriter_fourcc(*FOURCC[suffix])
        parent = Path(path).resolve().parent
        if not parent.is_dir():
            raise UsageError(f"{what}: folder {parent} does not exist")

    def write(self, image: np.ndarray, captured_mono: float | None = None) -> None:
        """Append a frame.  With its capture time, the frame is placed on the video's timeline:
        repeated to fill frames the preview never saw, skipped if it comes early, so that
        a live recording plays at real speed."""
        size = (image.shape[1], image.shape[0])
        if self._writer is None:
            fps = self._fps() if callable(self._fps) else self._fps
            self.fps = fps if fps and 0 < fps <= 240 else 30.0
            self._writer = cv2.VideoWriter(self.path, self._fourcc, self.fps, size)
            if not self._writer.isOpened():
                raise UsageError(f"{self._what}: cannot write video {self.path}")
            self._size = size
            self._start = captured_mono
            self._written = 0
        elif size != self._size:  # the source changed size (e.g. after a reconnect)
            image = cv2.resize(image, self._size)
        copies = 1
        if captured_mono is not None and self._start is not None:
            due = int((captured_mono - self._start) * self.fps) + 1  # frames the timeline holds by now
            copies = min(due - self._written, int(self.fps * 5))  # a long stall is not filled for ever
        for _ in range(max(0, copies)):
            self._writer.write(image)
            self._written += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
