"""Counters and rolling rates shared by the workers, read by the status line and logs."""

from __future__ import annotations

import re
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


class Percentiles:
    """p50 and p95 over the last ``size`` samples (a rolling window, bounded memory)."""

    def __init__(self, size: int = 500):
        self._samples: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, value: float) -> None:
        with self._lock:
            self._samples.append(value)

    def __len__(self) -> int:
        return len(self._samples)

    def quantiles(self) -> tuple[float, float] | None:
        """(p50, p95), or None before the first sample."""
        with self._lock:
            ordered = sorted(self._samples)
        if not ordered:
            return None

        def at(q: float) -> float:
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

        return at(0.5), at(0.95)


def _ms(pair: tuple[float, float] | None) -> str:
    return "-" if pair is None else f"p50 {pair[0] * 1000:.0f} ms, p95 {pair[1] * 1000:.0f} ms"


class Stats:
    """Plain counters (each written by one thread) and the rates of capture and inference."""

    def __init__(self) -> None:
        self.started_mono = time.monotonic()
        self.capture_rate = RateMeter()
        self.inference_rate = RateMeter()
        self.frames_read = 0
        self.source_reconnects = 0
        self.source_stalls = 0  # reads or opens the watchdog gave up on
        self.source_state = "starting"  # starting, open, reconnecting, stalled, ended
        self.last_frame_mono: float | None = None
        self.requests = 0
        self.results = 0
        self.skipped_bad_request = 0
        self.malformed = 0
        self.transient_errors = 0
        self.api_failures: dict[str, int] = {}  # what failed: "http 503", "timeout", "malformed" ...
        self.api_state = "starting"  # starting, ok, failing (retrying), down (breaker open)
        self.api_down_since: float | None = None  # monotonic time the breaker opened
        self.last_api_answer_mono: float | None = None  # any HTTP answer, even an error status
        self.api_quiet_until = 0.0  # monotonic end of a wait the API asked for (Retry-After)
        self.last_skip_mono: float | None = None  # a call the motion gate or the budget chose not to make
        self.published = 0
        self.skipped_no_change = 0  # calls the motion gate skipped (the last result republished)
        self.skipped_budget = 0  # calls not made because the call budget was spent
        self.late_results = 0  # results for a frame older than one already published: dropped
        self.bytes_sent = 0  # request bodies, base64 JPEG
        self.hung_requests = 0  # requests given up on after hang_after_s without an answer
        self.jsonl_dropped = 0  # JSONL lines dropped because the file could not keep up
        self.mqtt_dropped = 0  # detections not sent to the MQTT broker (disconnected, or its queue full)
        self.request_latency = Percentiles()  # seconds from sending a request to its answer
        self.result_age = Percentiles()  # seconds from capture to publish, of fresh results

    @staticmethod
    def thread_cpu_s() -> dict[str, float]:
        """CPU seconds so far of streamer's threads, by role (capture, dispatch, request,
        output ...): sampled from each thread's own CPU clock, when a heartbeat asks."""
        totals: dict[str, float] = {}
        for thread in threading.enumerate():
            role = "output" if thread is threading.main_thread() else re.sub(r"-\d+$", "", thread.name)
            try:
                seconds = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
            except (AttributeError, OSError, TypeError):  # not on Linux, or the thread just ended
                continue
            totals[role] = totals.get(role, 0.0) + seconds
        return totals

    def calls_text(self) -> str:
        """e.g. "calls 120, skipped 30 (no change 25, budget 5)"."""
        skipped = self.skipped_no_change + self.skipped_budget
        text = f"calls {self.requests}"
        if skipped:
            reasons = [
                f"{name} {n}"
                for name, n in (("no change", self.skipped_no_change), ("budget", self.skipped_budget))
                if n
            ]
            text += f", skipped {skipped} ({', '.join(reasons)})"
        return text

    def latency_text(self) -> str:
        return (
            f"result age {_ms(self.result_age.quantiles())} | request latency {_ms(self.request_latency.quantiles())}"
        )

    def count_failure(self, kind: str) -> None:
        self.api_failures[kind] = self.api_failures.get(kind, 0) + 1

    def failures_text(self) -> str:
        """e.g. "http 503 x4, timeout x2", most frequent first."""
        ranked = sorted(self.api_failures.items(), key=lambda item: (-item[1], item[0]))
        return ", ".join(f"{kind} x{count}" for kind, count in ranked)

    def api_text(self, now: float | None = None) -> str:
        if self.api_state == "down" and self.api_down_since is not None:
            now = time.monotonic() if now is None else now
            return f"API down {now - self.api_down_since:.0f} s"
        return f"API {self.api_state}"

    def line(self, dropped: int, age_ms: float | None) -> str:
        age = "-" if age_ms is None else f"{age_ms:.0f} ms"
        failed = self.transient_errors + self.skipped_bad_request + self.malformed
        text = (
            f"capture {self.capture_rate.rate():.1f} fps | inference {self.inference_rate.rate():.1f} fps"
            f" | result age {age} | {self.calls_text()} | dropped {dropped} | failed {failed}"
        )
        if self.source_state not in ("open", "ended"):
            text += f" | source {self.source_state}"
        if self.api_state in ("failing", "down"):
            text += f" | {self.api_text()} ({self.failures_text()})"
        return text

    def snapshot(self, dropped: int) -> dict:
        """The counters as a JSON-ready mapping (heartbeat messages, the stop summary)."""
        return {
            "frames_read": self.frames_read,
            "frames_dropped": dropped,
            "source_reconnects": self.source_reconnects,
            "source_stalls": self.source_stalls,
            "requests": self.requests,
            "results": self.results,
            "published": self.published,
            "late_results": self.late_results,
            "skipped_no_change": self.skipped_no_change,
            "skipped_budget": self.skipped_budget,
            "bytes_sent": self.bytes_sent,
            "hung_requests": self.hung_requests,
            "jsonl_dropped": self.jsonl_dropped,
            "mqtt_dropped": self.mqtt_dropped,
            "cpu_s": {role: round(seconds, 3) for role, seconds in sorted(self.thread_cpu_s().items())},
            "api_transient_errors": self.transient_errors,
            "api_skipped_bad_request": self.skipped_bad_request,
            "api_malformed": self.malformed,
            "api_failures": dict(self.api_failures),
        }
