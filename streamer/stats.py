"""Counters and rolling rates shared by the workers, read by the status line and logs."""

from __future__ import annotations

import threading
import time
from collections import deque


class RateMeter:
    """Events per second over the last ``window_s`` seconds."""

    def __init__(self, window_s: float = 2.0):
        self._window_s = window_s
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._times.append(now)
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self._window_s:
            self._times.popleft()

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._trim(now)
            if len(self._times) < 2:
                return 0.0
            span = max(now - self._times[0], self._times[-1] - self._times[0])
            return (len(self._times) - 1) / span if span > 0 else 0.0


class Stats:
    """Plain counters (each written by one thread) and the rates of capture and inference."""

    def __init__(self) -> None:
        self.capture_rate = RateMeter()
        self.inference_rate = RateMeter()
        self.frames_read = 0
        self.source_reconnects = 0
        self.source_state = "starting"  # starting, open, reconnecting, ended
        self.requests = 0
        self.results = 0
        self.skipped_bad_request = 0
        self.malformed = 0
        self.transient_errors = 0
        self.published = 0

    def line(self, dropped: int, age_ms: float | None) -> str:
        age = "-" if age_ms is None else f"{age_ms:.0f} ms"
        failed = self.transient_errors + self.skipped_bad_request + self.malformed
        return (f"capture {self.capture_rate.rate():.1f} fps | inference {self.inference_rate.rate():.1f} fps"
                f" | result age {age} | dropped {dropped} | failed {failed}")
