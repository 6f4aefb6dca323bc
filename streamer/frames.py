"""What travels between the threads: frames, results, and the bounded holders that carry them."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

T = TypeVar("T")


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
class Result:
    """The detections for one frame, in that frame's own pixels."""

    source: str
    frame_id: int
    captured_at: float
    captured_mono: float
    width: int
    height: int
    predictions: list[dict[str, Any]]  # the API's format; x, y = box centre (xywh)
    model: str
    sent_at: float
    received_at: float
    server_time_s: float | None = None
    inference_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # other top-level response fields


class DropOldestQueue(Generic[T]):
    """A bounded queue whose put never blocks: when full, the oldest item is dropped and counted."""

    def __init__(self, maxsize: int = 1):
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self._items: deque[T] = deque()
        self._maxsize = maxsize
        self._cond = threading.Condition()
        self.dropped = 0
        self.taken = 0  # items handed to a consumer; with the consumer's own count, tells idle

    def put(self, item: T) -> None:
        with self._cond:
            if len(self._items) >= self._maxsize:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify()

    def get_newest(self, timeout: float) -> T | None:
        """Wait up to timeout for an item; return the newest and drop (count) any older ones."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            if not self._items:
                return None
            item = self._items.pop()
            self.dropped += len(self._items)
            self._items.clear()
            self.taken += 1
            return item

    def get(self, timeout: float) -> T | None:
        """Wait up to timeout for an item; return the oldest one (in-order consumers)."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            if not self._items:
                return None
            self.taken += 1
            return self._items.popleft()

    def pending(self) -> int:
        """Items still waiting in the queue."""
        with self._cond:
            return len(self._items)

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class Latest(Generic[T]):
    """Holds the newest value and a version number, so a reader can tell whether it is new."""

    def __init__(self, changed: threading.Event | None = None):
        self._lock = threading.Lock()
        self._value: T | None = None
        self._version = 0
        self._changed = changed

    def set(self, value: T) -> None:
        with self._lock:
            self._value = value
            self._version += 1
        if self._changed is not None:
            self._changed.set()

    def get(self) -> tuple[int, T | None]:
        with self._lock:
            return self._version, self._value
