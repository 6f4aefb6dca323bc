"""The bounded holders that carry values between threads: producers never block."""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class DropOldestQueue(Generic[T]):
    """A bounded queue whose put never blocks: when full, the oldest item is dropped and counted."""

    def __init__(self, maxsize: int = 1):
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self._items: deque[T] = deque(maxlen=maxsize)  # full: append drops the oldest
        self._cond = threading.Condition()
        self.dropped = 0
        self.taken = 0  # items handed to a consumer; with the consumer's own count, tells idle

    def put(self, item: T) -> None:
        with self._cond:
            if len(self._items) == self._items.maxlen:
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
            if len(self._items) < self._items.maxlen:
                self._items.appendleft(item)
                self._cond.notify()
            else:
                self.dropped += 1

    def wake(self) -> None:
        """Wake every consumer waiting in a get, e.g. to see a stop flag at once."""
        with self._cond:
            self._cond.notify_all()

    def pending(self) -> int:
        """Items still waiting in the queue."""
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
