"""What travels between the threads: frames, results, and the bounded holders that carry them."""

from __future__ import annotations

import heapq
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from streamer.live.imaging import scale_predictions

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
    reused: bool = False  # the motion gate skipped the call: an earlier frame's predictions

    def rescaled_to(self, width: int, height: int) -> list[dict[str, Any]]:
        """The predictions in the pixels of a frame of another size (a camera that came back
        at another resolution); as they are for a frame of this result's own size."""
        if (width, height) == (self.width, self.height) or not isinstance(self.predictions, list):
            return self.predictions
        return scale_predictions(self.predictions, width / self.width, height / self.height)


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

    def get_newest(self, timeout: float, stop: threading.Event | None = None) -> T | None:
        """Wait up to timeout for an item; return the newest and drop (count) any older ones.
        With ``stop``, a stop set before ``wake`` is seen without waiting."""
        with self._cond:
            if not self._items and not (stop is not None and stop.is_set()):
                self._cond.wait(timeout)
            if not self._items:
                return None
            item = self._items.pop()
            self.dropped += len(self._items)
            self._items.clear()
            self.taken += 1
            return item

    def put_back(self, item: T) -> None:
        """Return an item from get_newest that was not used after all: it waits again, unless
        a newer one has come in meanwhile, which wins (the returned one is counted as dropped)."""
        with self._cond:
            self.taken -= 1
            if len(self._items) < self._maxsize:
                self._items.appendleft(item)
                self._cond.notify()
            else:
                self.dropped += 1

    def get(self, timeout: float) -> T | None:
        """Wait up to timeout for an item; return the oldest one (in-order consumers)."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            if not self._items:
                return None
            self.taken += 1
            return self._items.popleft()

    def wake(self) -> None:
        """Wake every consumer waiting in a get, e.g. to see a stop flag at once."""
        with self._cond:
            self._cond.notify_all()

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


class NewestResults:
    """Where request workers hand in results, newest wins.

    A result may be held until a release time (its request's send time plus the usual
    latency): with several requests in flight, answers that come back early then wait a
    moment, so that results go out evenly spaced instead of with the network's jitter.
    When a result is released, one for a frame older than (or the same as) the last one
    released arrived late: it is counted, not kept.

    Whoever publishes (a request thread at a result's release time, or the output loop as
    it passes) takes released results in order with ``drain`` (a bounded backlog, so nothing
    is lost between two passes); the preview takes the newest with ``latest``."""

    def __init__(self, backlog: int = 64):
        self._lock = threading.Lock()
        self._held: list = []  # heap of (release_at, seq, result)
        self._seq = 0
        self._backlog = backlog
        self._latest = None
        self._last_frame_id = -1
        self.accepted = 0
        self.late = 0

    def offer(self, result, release_at: float = 0.0) -> bool:
        """Hand in a result, to be released at ``release_at`` (monotonic; 0: at once).
        False if it is already older than the last one released."""
        with self._lock:
            if result.frame_id <= self._last_frame_id:
                self.late += 1
                return False
            self._seq += 1
            heapq.heappush(self._held, (release_at, self._seq, result))
            if len(self._held) > self._backlog:  # nobody is draining: keep the newest
                kept = heapq.nlargest(self._backlog, self._held, key=lambda item: item[2].frame_id)
                self.late += len(self._held) - len(kept)
                self._held = kept
                heapq.heapify(self._held)
        return True

    def next_release(self) -> float | None:
        with self._lock:
            return self._held[0][0] if self._held else None

    def drain(self, now: float = float("inf")) -> list:
        """The results due by ``now``, in release order, newest-wins applied."""
        out = []
        with self._lock:
            while self._held and self._held[0][0] <= now:
                _, _, result = heapq.heappop(self._held)
                if result.frame_id <= self._last_frame_id:
                    self.late += 1
                    continue
                self._last_frame_id = result.frame_id
                self._latest = result
                self.accepted += 1
                out.append(result)
        return out

    def latest(self):
        with self._lock:
            return self._latest
