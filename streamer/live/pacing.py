"""When to send the next request: pacing by latency, the call budget and the motion gate.

All three are plain objects with an injectable clock, used by the dispatch thread
and tested without threads or sockets.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import deque
from collections.abc import Callable

import cv2
import numpy as np

from streamer.stats import quantile

log = logging.getLogger(__name__)


class Pacing:
    """Spaces requests so that results come back evenly: about every L / N seconds, where L
    is the recent request latency (the median of the last few) and N the requests allowed in
    flight, and never more often than ``max_fps``.  Until a latency is known one request is
    sent at a time, so a start does not burst N requests at once."""

    SAMPLES = 16
    HANG_MIN_S = 2.0

    def __init__(self, max_in_flight: int, max_fps: float | None, clock: Callable[[], float] = time.monotonic):
        self.max_in_flight = max_in_flight
        self.min_interval_s = 1.0 / max_fps if max_fps else 0.0
        self._clock = clock
        self._latencies: deque[float] = deque(maxlen=self.SAMPLES)
        self.next_send_at = 0.0

    def record_latency(self, seconds: float) -> None:
        self._latencies.append(seconds)

    @property
    def latency_s(self) -> float | None:
        return statistics.median(self._latencies) if self._latencies else None

    def hang_after_s(self) -> float:
        """How long a request may stay unanswered before it is given up on as hung:
        four times the recent p95 latency, and at least HANG_MIN_S."""
        return max(self.HANG_MIN_S, 4 * quantile(self._latencies, 0.95)) if self._latencies else self.HANG_MIN_S

    def interval_s(self) -> float:
        return max(self.min_interval_s, (self.latency_s or 0.0) / self.max_in_flight)

    def capacity(self) -> int:
        """How many requests may be in flight now."""
        return self.max_in_flight if self._latencies else 1

    def wait_s(self, in_flight: int) -> float | None:
        """Seconds until the next send is due (0: now), or None while in flight is at capacity."""
        return None if in_flight >= self.capacity() else max(0.0, self.next_send_at - self._clock())

    def sent(self) -> None:
        now = self._clock()
        interval = self.interval_s()
        # The next slot follows the one just used, so a slightly late send does not push every
        # later one back; after an idle spell longer than an interval, it counts from now.
        base = self.next_send_at if self.next_send_at > now - interval else now
        self.next_send_at = base + interval


class CallBudget:
    """At most ``limit`` calls per clock hour or day (local time).  When it is spent, calls
    wait for the next window; a warning says so once per window."""

    def __init__(self, limit: int | None, period: str = "hour", clock: Callable[[], float] = time.time):
        if period not in ("hour", "day"):
            raise ValueError(f"period must be hour or day, got {period!r}")
        self.limit = limit
        self.period = period
        self._clock = clock
        self._window: float | None = None
        self.spent = 0
        self._warned_window: float | None = None

    def _window_start(self, now: float) -> float:
        local = time.localtime(now)
        hours = local.tm_hour if self.period == "day" else 0
        return now - hours * 3600 - local.tm_min * 60 - local.tm_sec - (now % 1)

    def window_end(self, now: float | None = None) -> float:
        now = self._clock() if now is None else now
        start = self._window_start(now)
        # A day's end is the next local midnight (a day may be 23 or 25 hours long around DST changes).
        return start + 3600 if self.period == "hour" else self._window_start(start + 26 * 3600)

    def _roll(self, now: float) -> None:
        start = self._window_start(now)
        if start != self._window:
            self._window = start
            self.spent = 0

    def exhausted(self) -> bool:
        if self.limit is None:
            return False
        now = self._clock()
        self._roll(now)
        if self.spent < self.limit:
            return False
        if self._warned_window != self._window:
            self._warned_window = self._window
            log.warning(
                "call budget spent: %d calls this %s; no calls until %s (the preview keeps running)",
                self.limit,
                self.period,
                time.strftime("%H:%M", time.localtime(self.window_end(now))),
            )
        return True

    def spend(self) -> None:
        self._roll(self._clock())
        self.spent += 1


class MotionGate:
    """Says whether a frame differs enough from the last one sent to be worth a call.

    The difference is the mean absolute difference of small greyscale thumbnails, as a
    fraction of full scale (0 = identical, 1 = black to white), so it is cheap and does not
    react to sensor noise."""

    THUMB = (64, 36)

    def __init__(self, min_change: float):
        self.min_change = min_change
        self.enabled = min_change > 0
        self._last: np.ndarray | None = None  # thumbnail of the last frame answered

    @staticmethod
    def thumbnail(image: np.ndarray) -> np.ndarray:
        small = cv2.resize(image, MotionGate.THUMB, interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small

    def worth_sending(self, thumb: np.ndarray) -> bool:
        """Whether a thumbnail changed enough against the last frame answered (always, before one)."""
        return (
            not self.enabled
            or self._last is None
            or float(cv2.absdiff(thumb, self._last).mean()) / 255.0 >= self.min_change
        )

    def sent(self, thumb: np.ndarray) -> None:
        """Remember the thumbnail of a frame whose answer arrived: later frames compare with it
        (a gate that is off never looks at it)."""
        self._last = thumb
