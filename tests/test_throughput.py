"""Several requests in flight, newest result wins, max_fps, the motion gate and the call budget,
checked as behaviour against a real local API (speed itself is measured by bench/throughput.py)."""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest
import zmq
from conftest import Subscriber, free_port

from streamer.api.client import DetectionClient
from streamer.live.dispatch import InferenceSettings, InferenceWorker
from streamer.live.pipeline import Outputs
from streamer.live.publisher import NewestResults, Publisher
from streamer.outputs.zmq_feed import ZmqPublisher
from streamer.queues import DropOldestQueue
from streamer.sources.open import SyntheticSource
from streamer.sources.synthetic import SyntheticScene
from streamer.standin.server import ApiServer, Fault
from streamer.stats import Stats
from streamer.types import Frame
from support.running import Running, streamer_threads, wait_until


def collect_detections(sub: Subscriber, seconds: float) -> list[dict]:
    return [json.loads(m[1]) for m in sub.collect(10_000, timeout_s=seconds)]


def joined_pair(endpoint: str) -> tuple[ZmqPublisher, Subscriber]:
    """A publisher and a subscriber whose subscription has arrived (no slow-joiner loss)."""
    publisher, sub = ZmqPublisher(endpoint), Subscriber(endpoint, b"")
    assert wait_until(lambda: publisher.send(b"{}", topic="sync") and sub.recv(0.05) is not None, 5)
    sub.sock.setsockopt(zmq.UNSUBSCRIBE, b"")
    sub.sock.setsockopt(zmq.SUBSCRIBE, b"detections")
    while sub.recv(0.05) is not None:
        pass
    return publisher, sub


@pytest.mark.parametrize("n", [1, 4])
def test_never_more_than_n_requests_in_flight_and_results_only_move_forward(n):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    with ApiServer("127.0.0.1", 0, latency_ms=200, jitter=0.1) as server:
        sub = Subscriber(endpoint)
        run = Running(
            server.url,
            Outputs(outputs=[ZmqPublisher(endpoint)]),
            settings=InferenceSettings(max_in_flight=n),
            client_timeout_s=5,
        )
        try:
            messages = collect_detections(sub, 6)
        finally:
            run.finish()
            sub.close()
    stats = run.stats
    assert server.max_in_flight_seen <= n
    if n > 1:
        assert server.max_in_flight_seen >= 2  # it did overlap requests
    ids = [m["frame_id"] for m in messages]
    assert len(ids) >= 5 and ids == sorted(set(ids))  # strictly increasing: never an older result
    # Every answer was published or counted as late, except those still in flight at the stop
    # (at most n), which arrive after the last publishing pass.
    assert stats.published + stats.late_results <= stats.results <= stats.published + stats.late_results + n
    assert stats.requests == sum(server.counts.values())
    assert all(
        m["sent_at"] >= m["captured_at"]
        and m["received_at"] >= m["sent_at"]
        and m["published_at"] >= m["received_at"]
        and m["reused"] is False
        for m in messages
    )
    assert streamer_threads() == []


def test_each_request_takes_the_newest_frame_and_never_one_already_sent():
    with ApiServer("127.0.0.1", 0, latency_ms=150) as server:
        run = Running(server.url, settings=InferenceSettings(max_in_flight=8))
        taken: list[tuple[int, int]] = []  # (frame id taken, newest frame id read at that moment)
        queue, take = run.pipeline.queue, run.pipeline.queue.get_newest

        def recording_get_newest(timeout, stop=None, **more):
            frame = take(timeout, stop, **more)
            if frame is not None:
                taken.append((frame.frame_id, run.pipeline.latest_frame.get()[1].frame_id))
            return frame

        queue.get_newest = recording_get_newest
        try:
            assert wait_until(lambda: len(taken) >= 30, 20)
        finally:
            run.finish()
    ids = [frame_id for frame_id, _ in taken]
    assert ids == sorted(set(ids))  # every request a different, later frame
    # The newest frame at that moment (the capture thread may have read one more meanwhile).
    assert all(newest - frame_id <= 1 for frame_id, newest in taken), taken


def test_max_fps_caps_the_calls_a_second():
    with ApiServer("127.0.0.1", 0, latency_ms=20) as server:
        run = Running(server.url, settings=InferenceSettings(max_in_flight=4, max_fps=4.0))
        try:
            assert wait_until(lambda: run.stats.requests >= 2, 10)
            start = run.stats.requests
            wait_until(lambda: False, 3.0)  # three seconds of a source at 30 fps
            made = run.stats.requests - start
        finally:
            run.finish()
    assert 6 <= made <= 4 * 3 + 2, made  # about 12: capped, though 30 frames a second were there


def test_motion_gate_republishes_the_last_result_for_a_still_scene_and_calls_for_a_moving_one():
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    with ApiServer("127.0.0.1", 0) as server:
        publisher, sub = joined_pair(endpoint)
        # A still scene renders identical frames (change 0); the moving one changes about 0.006
        # between frames 3 apart (one call slot at 10 calls a second).
        settings = InferenceSettings(max_in_flight=2, max_fps=10.0, min_change=0.003)
        run = Running(
            server.url,
            Outputs(outputs=[publisher]),
            settings=settings,
            source=SyntheticSource(640, 360, 30.0, moving=False),
        )
        try:
            messages = collect_detections(sub, 4)
        finally:
            run.finish()
            sub.close()
        still_calls = sum(server.counts.values())
    reused = [m for m in messages if m["reused"]]
    assert still_calls <= 2  # the first frame, maybe one more before its answer set the baseline
    assert len(reused) >= 15 and run.stats.skipped_no_change >= 15
    fresh = [m for m in messages if not m["reused"]]
    # The republished boxes are those of the answered frame: the same server inference id.
    assert fresh and {m["inference_id"] for m in reused} == {fresh[-1]["inference_id"]}
    assert all(m["frame_id"] > fresh[0]["frame_id"] for m in reused)  # a new frame id, the old boxes
    line = run.pipeline.snapshot().line()
    assert "skipped" in line and "no change" in line

    with ApiServer("127.0.0.1", 0) as server:
        run = Running(server.url, settings=settings, source=SyntheticSource(640, 360, 30.0, moving=True))
        try:
            assert wait_until(lambda: run.stats.requests >= 10, 10)
        finally:
            run.finish()
    assert run.stats.skipped_no_change <= 1  # the shapes move by more than the threshold: all sent


def test_call_budget_stops_calls_warns_once_and_keeps_the_preview_running(caplog):
    with ApiServer("127.0.0.1", 0) as server, caplog.at_level(logging.WARNING, logger="streamer.live.pacing"):
        run = Running(server.url, settings=InferenceSettings(max_in_flight=2, max_fps=20.0, budget_calls=5))
        try:
            assert wait_until(lambda: run.stats.skipped_budget >= 10, 10)
            frames_then = run.stats.frames_read
            assert wait_until(lambda: run.stats.frames_read > frames_then + 10, 5)  # the source goes on
        finally:
            run.finish()
    assert sum(server.counts.values()) == 5 and run.stats.requests == 5
    warnings = [r for r in caplog.records if "call budget spent" in r.getMessage()]
    assert len(warnings) == 1
    assert "budget" in run.pipeline.snapshot().calls_text()


@pytest.mark.parametrize(
    "flag, value, key",
    [
        ("--max-in-flight", "0", "inference.max_in_flight"),
        ("--max-in-flight", "17", "inference.max_in_flight"),
        ("--max-fps", "-1", "inference.max_fps"),
        ("--min-change", "1.5", "inference.min_change"),
    ],
)
def test_rate_flags_are_checked(spawn, flag, value, key):
    run = spawn(["run", "--source", "synthetic", "--model", "a/1", flag, value])
    assert run.wait(20) == 2
    lines = run.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: {key}:") and f"(from {flag})" in lines[-1]


def _worker_on(url: str, queue, stop, max_in_flight: int = 2):
    client = DetectionClient(url, "synthetic/1", None)
    publisher = Publisher(NewestResults(), Stats(), Stats().snapshot, source="synthetic", name=None)
    return client, InferenceWorker(
        queue, client, publisher, Stats(), stop, InferenceSettings(max_in_flight=max_in_flight)
    )


def _frame(frame_id: int):
    return Frame("synthetic", frame_id, time.time(), time.monotonic(), SyntheticScene(320, 240).render(frame_id))


def test_a_429_that_comes_while_the_dispatcher_waits_for_a_frame_holds_the_next_send(api_server):
    """The dispatch thread may already wait for a frame when a request's answer is a 429
    with Retry-After: the frame that then comes must wait out the pause too."""
    queue, stop = DropOldestQueue(1), threading.Event()
    client, worker = _worker_on(api_server.url, queue, stop)
    worker.start()
    try:
        queue.put(_frame(1))  # answered at once: the latency is known, two may be in flight
        assert wait_until(lambda: api_server.counts.get(200) == 1 and worker.idle(), 5)
        api_server.set_fault(Fault(status=429, message="slow down", retry_after="2", hang_s=0.5, remaining=1))
        queue.put(_frame(2))  # answered 429 after 0.5 s, while the dispatcher waits for a frame
        assert wait_until(lambda: worker.pause_until > 0, 5)
        paused_at = time.monotonic()
        queue.put(_frame(3))
        assert wait_until(lambda: api_server.counts.get(200, 0) >= 2, 5)
        held_s = time.monotonic() - paused_at
    finally:
        stop.set()
        assert worker.join(5)
        client.close()
    assert api_server.counts == {200: 2, 429: 1}
    assert held_s >= 1.5, f"frame 3 went {held_s:.2f} s into a 2 s pause"


def test_a_frame_taken_as_the_stop_comes_is_not_sent():
    """A frame that get_newest hands over just as the stop is set is put back, not sent:
    nothing goes to the API during a shutdown."""

    class StopOnTake(DropOldestQueue):
        def get_newest(self, timeout, stop=None):
            frame = super().get_newest(timeout, stop)
            if frame is not None:
                stop.set()  # the stop lands while the dispatcher holds the frame
            return frame

    with ApiServer("127.0.0.1", 0) as server:
        queue, stop = StopOnTake(1), threading.Event()
        client, worker = _worker_on(server.url, queue, stop)
        worker.start()
        queue.put(_frame(1))
        try:
            assert wait_until(stop.is_set, 5)
            assert worker.join(5)
        finally:
            stop.set()
            client.close()
        assert server.counts == {}
        assert queue.pending() == 1 and queue.taken == 0  # back in the queue, not counted as handled
        assert worker.idle() is False
