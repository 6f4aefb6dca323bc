"""Counters the workers write, the one frozen snapshot every reader uses, and the one health rule.

Each counter is written by one thread.  Everything that shows them (the status line, the
heartbeat, ``/metrics``, ``/healthz``, the systemd watchdog, the stop summary) reads a
``Snapshot``, and ``COUNTERS`` is the one list of what is counted.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from streamer.types import EMPTY, frozen_mapping

# The one list of what is counted: (key in the heartbeat's "counters" and /metrics, the words of
# the stop summary, what it counts).
COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("frames_read", "frames read", "Frames read from the source"),
    ("frames_dropped", "dropped", "Frames dropped before inference (a newer one replaced them)"),
    ("source_reconnects", "source reconnects", "Times the source was reopened"),
    ("source_stalls", "stalls", "Reads or opens the stall watchdog gave up on"),
    ("requests", "requests", "Requests sent to the detection API"),
    ("results", "results", "Results received from the detection API"),
    ("published", "published", "Detections messages published"),
    ("late_results", "late results dropped", "Results dropped because a newer one was published first"),
    ("skipped_no_change", "skipped (no change)", "Calls the motion gate skipped"),
    ("skipped_budget", "skipped (budget)", "Calls not made because the call budget was spent"),
    ("bytes_sent", "bytes uploaded", "Bytes of request bodies sent"),
    ("hung_requests", "hung requests", "Requests given up on without an answer"),
    ("api_transient_errors", "transient API errors", "API calls that failed and were retried (429, 5xx, timeouts)"),
    ("api_skipped_bad_request", "skipped (400)", "Frames the API refused (400)"),
    ("api_malformed", "malformed", "Answers that were not a valid response"),
)


def quantile(samples: Sequence[float], q: float) -> float:
    """The q-quantile of samples (nearest rank); samples must not be empty."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class RateMeter:
    """Events per second over the last ``window_s`` seconds: the events in the window divided by
    its length (by the time since the start, at least a second, while the window is not full), so
    that it agrees with the counters it stands beside."""

    def __init__(self, window_s: float = 5.0, clock=time.monotonic):
        self._window_s = window_s
        self._times: deque[float] = deque()
        self._lock = threading.Lock()
        self._started = clock()

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
            return len(self._times) / min(self._window_s, max(1.0, now - self._started))


class Percentiles:
    """p50 and p95 over the last ``size`` samples (a rolling window, bounded memory)."""

    def __init__(self, size: int = 500):
        self._samples: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, value: float) -> None:
        with self._lock:
            self._samples.append(value)

    def quantiles(self) -> tuple[float, float] | None:
        """(p50, p95), or None before the first sample."""
        with self._lock:
            samples = list(self._samples)
        return (quantile(samples, 0.5), quantile(samples, 0.95)) if samples else None


def duration(seconds: float) -> str:
    """A duration a person reads at a glance: milliseconds below 10 s, whole seconds above."""
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.0f} s"


def _ms(pair: tuple[float, float] | None) -> str:
    return "-" if pair is None else f"p50 {duration(pair[0])}, p95 {duration(pair[1])}"


def thread_cpu_s() -> dict[str, float]:
    """CPU seconds so far of streamer's threads, by role (capture, dispatch, request, output ...)."""
    totals: dict[str, float] = {}
    for thread in threading.enumerate():
        role = "output" if thread is threading.main_thread() else re.sub(r"-\d+$", "", thread.name)
        try:
            seconds = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
        except (AttributeError, OSError, TypeError):  # not on Linux, or the thread just ended
            continue
        totals[role] = totals.get(role, 0.0) + seconds
    return totals


class Stats:
    """Plain counters (an attribute for each of COUNTERS, each written by one thread) and the rates
    of capture and inference."""

    def __init__(self) -> None:
        self.started_mono = time.monotonic()
        self.capture_rate = RateMeter()
        self.send_rate = RateMeter()  # requests sent a second
        self.inference_rate = RateMeter()  # results received a second
        for key, _, _ in COUNTERS:  # each counter at 0 (frames_dropped is the frame queue's own count)
            if key != "frames_dropped":
                setattr(self, key, 0)
        self.source_state = "starting"  # starting, open, reconnecting, stalled, ended
        self.last_frame_mono: float | None = None
        self.api_failures: dict[str, int] = {}  # what failed: "http 503", "timeout", "malformed" ...
        self.api_state = "starting"  # starting, ok, failing (retrying), down (breaker open)
        self.api_down_since: float | None = None  # monotonic time the breaker opened
        self.last_api_answer_mono: float | None = None  # any HTTP answer, even an error status
        self.api_quiet_until = 0.0  # monotonic end of a wait the API asked for (Retry-After)
        self.last_skip_mono: float | None = None  # a call the motion gate or the budget chose not to make
        self.request_latency = Percentiles()  # seconds from sending a request to its answer
        self.result_age = Percentiles()  # seconds from capture to publish, of fresh results

    def count_failure(self, kind: str) -> None:
        self.api_failures[kind] = self.api_failures.get(kind, 0) + 1

    def snapshot(
        self,
        *,
        frames_dropped: int = 0,
        last_result_mono: float | None = None,
        last_result_frame_id: int | None = None,
        outputs_dropped: Mapping[str, int] | None = None,
        now: float | None = None,
        with_cpu: bool = False,
    ) -> Snapshot:
        """Everything shown about the run, at one moment."""
        now = time.monotonic() if now is None else now

        def age(mono: float | None) -> float | None:
            return None if mono is None else now - mono

        return Snapshot(
            uptime_s=now - self.started_mono,
            source_state=self.source_state,
            api_state=self.api_state,
            api_down_s=age(self.api_down_since),
            last_frame_age_s=age(self.last_frame_mono),
            last_result_age_s=age(last_result_mono),
            last_result_frame_id=last_result_frame_id,
            last_skip_age_s=age(self.last_skip_mono),
            api_quiet_s=max(0.0, self.api_quiet_until - now),
            capture_fps=self.capture_rate.rate(now),
            send_per_s=self.send_rate.rate(now),
            inference_fps=self.inference_rate.rate(now),
            result_age=self.result_age.quantiles(),
            request_latency=self.request_latency.quantiles(),
            counters=frozen_mapping(
                {key: frames_dropped if key == "frames_dropped" else getattr(self, key) for key, _, _ in COUNTERS}
            ),
            api_failures=frozen_mapping(self.api_failures),
            outputs_dropped=frozen_mapping(outputs_dropped),
            cpu_s=frozen_mapping({k: round(v, 3) for k, v in sorted(thread_cpu_s().items())}) if with_cpu else EMPTY,
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The run at one moment: states, ages (seconds, None before the first), rates and counters."""

    uptime_s: float
    source_state: str
    api_state: str
    api_down_s: float | None
    last_frame_age_s: float | None
    last_result_age_s: float | None
    last_result_frame_id: int | None
    last_skip_age_s: float | None
    api_quiet_s: float  # what is left of a wait the API asked for (Retry-After)
    capture_fps: float
    send_per_s: float  # requests sent a second
    inference_fps: float  # results received a second
    result_age: tuple[float, float] | None  # p50, p95 at publish, of fresh results
    request_latency: tuple[float, float] | None  # p50, p95
    counters: Mapping[str, int]  # the keys of COUNTERS
    api_failures: Mapping[str, int] = field(default_factory=lambda: EMPTY)  # by kind: "http 503", "timeout" ...
    outputs_dropped: Mapping[str, int] = field(default_factory=lambda: EMPTY)  # by output: "jsonl", "mqtt" ...
    cpu_s: Mapping[str, float] = field(default_factory=lambda: EMPTY)  # by thread role, when asked for

    def failures_text(self) -> str:
        """e.g. "http 503 x4, timeout x2", most frequent first."""
        ranked = sorted(self.api_failures.items(), key=lambda item: (-item[1], item[0]))
        return ", ".join(f"{kind} x{count}" for kind, count in ranked)

    def api_text(self) -> str:
        if self.api_state == "down" and self.api_down_s is not None:
            return f"API down {self.api_down_s:.0f} s"
        return f"API {self.api_state}"

    def calls_text(self) -> str:
        """e.g. "calls 120, skipped 30 (no change 25, budget 5)"."""
        c = self.counters
        skipped = {"no change": c["skipped_no_change"], "budget": c["skipped_budget"]}
        parts = ", ".join(f"{why} {n}" for why, n in skipped.items() if n)  # empty when nothing was skipped
        return f"calls {c['requests']}" + (f", skipped {sum(skipped.values())} ({parts})" if parts else "")

    def latency_text(self) -> str:
        return f"capture to publish {_ms(self.result_age)} | request {_ms(self.request_latency)}"

    def line(self) -> str:
        """The status line: what goes in (frames), out (requests) and back (results) a second,
        how old the newest result's frame is, and what was called and what failed."""
        age = "none yet" if self.last_result_age_s is None else f"{duration(self.last_result_age_s)} old"
        failed = sum(self.counters[key] for key in ("api_transient_errors", "api_skipped_bad_request", "api_malformed"))
        text = (
            f"capture {self.capture_fps:.1f} fps | sent {self.send_per_s:.1f}/s | results {self.inference_fps:.1f}/s"
            f" | newest result {age} | {self.calls_text()} | failed {failed}"
        )
        if self.source_state not in ("open", "ended"):
            text += f" | source {self.source_state}"
        if self.api_state in ("failing", "down"):
            text += f" | {self.api_text()} ({self.failures_text()})"
        return text

    def summary(self) -> str:
        """The stop summary: every counter, the failures by kind and the outputs' drops."""
        text = ", ".join(f"{self.counters[key]} {words}" for key, words, _ in COUNTERS)
        if self.api_failures:
            text += f" ({self.failures_text()})"
        dropped = [f"{name} {n}" for name, n in sorted(self.outputs_dropped.items()) if n]
        if dropped:
            text += f"; dropped by outputs: {', '.join(dropped)}"
        return text

    def problems(self, max_age_s: float) -> list[str]:
        """The one health rule: why streamer is not doing its job now (empty: healthy).

        Frames must flow and results come within ``max_age_s``.  Calls the motion gate or the
        call budget chose not to make, and a wait the API asked for (Retry-After), are not
        faults: the newest result stands for them.  /healthz and the systemd watchdog use this."""
        reasons = []
        if self.source_state in ("reconnecting", "stalled", "ended"):
            reasons.append(f"source {self.source_state}")
        elif self.last_frame_age_s is None:
            reasons.append("no frame yet")
        elif self.last_frame_age_s > max_age_s:
            reasons.append(f"no frame for {self.last_frame_age_s:.0f} s")
        if self.api_state in ("failing", "down"):
            failures = self.failures_text()
            reasons.append(self.api_text() + (f" ({failures})" if failures else ""))
        skipping = self.last_skip_age_s is not None and self.last_skip_age_s < max_age_s
        if not (skipping or self.api_quiet_s > 0):
            if self.last_result_age_s is None:
                reasons.append("no result yet")
            elif self.last_result_age_s > max_age_s:
                reasons.append(f"no result for {self.last_result_age_s:.0f} s")
        return reasons
