"""The publisher stage: results leave here, in order and evenly paced, for every output.

Request threads hand each result to ``NewestResults`` with a release time and go back to work.
One thread, ``publish``, releases them when due (newest wins: a result for an older frame than
one already released is counted as late), encodes each message once and calls each output's
``deliver``.  It sends the status heartbeat too.  No lock is held while an output runs, and an
output never blocks: one that cannot take a message drops it and counts it.  This is the place
for a stage between results and outputs (tracking, zones, events).
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable

from streamer.message import encode_message, result_message, status_message
from streamer.stats import Snapshot, Stats
from streamer.threads import IDLE_WAIT_S, named_thread, record_failure
from streamer.types import Delivery, Output, Result

log = logging.getLogger(__name__)

SLOW_OUTPUT_S = 0.25  # an output whose deliver takes longer is named, once: it breaks the contract


class NewestResults:
    """Where request workers hand in results, newest wins.

    A result may be held until a release time (its request's send time plus the usual
    latency): with several requests in flight, answers that come back early then wait a
    moment, so that results go out evenly spaced instead of with the network's jitter.
    When a result is released, one for a frame older than (or the same as) the last one
    released arrived late: it is counted, not kept.

    The publisher takes released results in order with ``drain`` (a bounded backlog, so
    nothing is lost between two passes); the preview takes the newest with ``latest``."""

    def __init__(self, backlog: int = 64):
        self._lock = threading.Lock()
        self._held: list = []  # heap of (release_at, seq, result)
        self._seq = 0
        self._backlog = backlog
        self.latest = None  # the last result released (read without the lock: one reference)
        self._last_frame_id = -1
        self.accepted = self.late = 0  # results released, and results dropped as late

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
                self.late += len(self._held) - self._backlog
                self._held = heapq.nlargest(self._backlog, self._held, key=lambda item: item[2].frame_id)
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
                self.latest = result
                self.accepted += 1
                out.append(result)
        return out


class Publisher:
    """Thread ``publish``: releases results when due and delivers them, and heartbeats, to each output."""

    def __init__(
        self,
        results: NewestResults,
        stats: Stats,
        snapshot: Callable[..., Snapshot],
        *,
        source: str,
        name: str | None,
        heartbeat_s: float = 2.0,
        stop: threading.Event | None = None,
        outputs: list[Output] | None = None,
    ):
        self.results = results
        self.stats = stats
        self.snapshot = snapshot
        self.source = source
        self.name = name
        self.heartbeat_s = heartbeat_s
        self._stop_all = stop  # set when publishing fails: the run ends
        self.outputs: list[Output] = [] if outputs is None else outputs  # may grow while running
        self.error: BaseException | None = None
        self._wake = threading.Condition()
        self._stopping = False
        self._last_heartbeat = float("-inf")
        self._slow_named: set[str] = set()
        self._thread = named_thread("publish", self._run)

    def start(self) -> None:
        self._thread.start()

    def offer(self, result: Result, release_at: float = 0.0) -> None:
        """Hand in a result, released at ``release_at`` (monotonic; 0: at once); never blocks."""
        if self.results.offer(result, release_at):
            with self._wake:
                self._wake.notify()

    def stop(self, deadline: float) -> bool:
        """Publish what is held (even early), send the last heartbeat and end the thread; whether it ended."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            stopping = False
            while not stopping:
                with self._wake:
                    if not self._stopping:
                        self._wake.wait(self._sleep_s())
                    stopping = self._stopping
                now = time.monotonic()
                self._release(float("inf") if stopping else now)  # a stop releases even what is held
                if stopping or now - self._last_heartbeat >= self.heartbeat_s:
                    self._last_heartbeat = now
                    self._heartbeat("stopped" if stopping else "running")
        except BaseException as exc:  # a full disk, a bug: recorded, and it ends the run
            record_failure(exc, self, self._stop_all, "publishing", log)

    def _sleep_s(self) -> float:
        release = self.results.next_release()
        now = time.monotonic()
        due = (
            IDLE_WAIT_S,
            self._last_heartbeat + self.heartbeat_s - now,
            float("inf") if release is None else release - now,
        )
        return max(0.0, min(due))

    def _release(self, now: float) -> None:
        for result in self.results.drain(now):
            published_at = time.time()
            if not result.reused:
                self.stats.result_age.add(published_at - result.captured_at)
            self.stats.late_results = self.results.late
            if not self.outputs:
                continue
            message = result_message(result, published_at, self.name)
            self._deliver(Delivery("detections", encode_message(message), message, result=result))
            self.stats.published += 1

    def _heartbeat(self, state: str) -> None:
        if not self.outputs:
            return
        snapshot = self.snapshot(with_cpu=True)
        message = status_message(self.source, state, snapshot, name=self.name)
        self._deliver(Delivery("status", encode_message(message), message, status=snapshot))

    def _deliver(self, delivery: Delivery) -> None:
        for output in tuple(self.outputs):
            started = time.monotonic()
            output.deliver(delivery)
            took_s = time.monotonic() - started
            if took_s > SLOW_OUTPUT_S and output.output_name not in self._slow_named:
                self._slow_named.add(output.output_name)
                log.warning(
                    "output %s took %.2f s to take a message; outputs must not block", output.output_name, took_s
                )

    def dropped(self) -> dict[str, int]:
        """What each output dropped, by name."""
        return {output.output_name: output.dropped for output in tuple(self.outputs)}
