"""The publisher stage: results leave in order at their release time, to every output, encoded once;
the one health rule; the one list of counters."""

from __future__ import annotations

import json
import threading
import time

import pytest

from streamer.live.publisher import NewestResults, Publisher
from streamer.stats import COUNTERS, Stats
from streamer.types import Delivery, Result
from support.running import wait_until


class Recording:
    """An output that keeps what it is given."""

    output_name = "recording"

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.dropped = 0
        self.closed = False

    def deliver(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)

    def close(self, timeout_s: float) -> bool:
        self.closed = True
        return True

    def of(self, kind: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.kind == kind]


def _result(frame_id: int) -> Result:
    return Result("cam", frame_id, time.time(), time.monotonic(), 64, 48, model="m/1")


@pytest.fixture
def publishing():
    stats = Stats()
    outputs = [Recording(), Recording()]
    publisher = Publisher(
        NewestResults(), stats, stats.snapshot, source="cam", name="front", heartbeat_s=0.2, outputs=outputs
    )
    publisher.start()
    yield publisher, outputs, stats
    assert publisher.stop(time.monotonic() + 2)  # its thread ended


def test_every_output_gets_each_result_once_in_order_and_the_same_bytes(publishing):
    publisher, outputs, stats = publishing
    for frame_id in (1, 2, 4, 3, 5):  # 3 arrives after 4 was released: late, dropped
        publisher.offer(_result(frame_id))
        assert wait_until(lambda: publisher.results.next_release() is None, 2)
    assert wait_until(lambda: len(outputs[1].of("detections")) == 4, 2)
    first, second = ([d.result.frame_id for d in o.of("detections")] for o in outputs)
    assert first == second == [1, 2, 4, 5]
    assert outputs[0].of("detections")[0].payload is outputs[1].of("detections")[0].payload  # encoded once
    message = json.loads(outputs[0].of("detections")[0].payload)
    assert message["name"] == "front" and message == dict(outputs[0].of("detections")[0].message)
    assert stats.published == 4 and publisher.results.late == 1


def test_an_early_result_is_held_until_its_release_time(publishing):
    publisher, outputs, _ = publishing
    release_at = time.monotonic() + 0.5
    publisher.offer(_result(1), release_at=release_at)
    assert wait_until(lambda: outputs[0].of("detections"), 2)
    delivered_at = time.monotonic()
    assert delivered_at >= release_at


def test_heartbeats_go_to_every_output_and_the_stop_sends_the_last_one():
    stats = Stats()
    output = Recording()
    publisher = Publisher(
        NewestResults(), stats, stats.snapshot, source="cam", name=None, heartbeat_s=0.1, outputs=[output]
    )
    publisher.start()
    assert wait_until(lambda: len(output.of("status")) >= 2, 3)
    publisher.offer(_result(9), release_at=time.monotonic() + 3600)  # held far into the future
    assert publisher.stop(time.monotonic() + 2)
    assert [d.result.frame_id for d in output.of("detections")] == [9]  # published on the way out
    last = json.loads(output.deliveries[-1].payload)
    assert last["type"] == "status" and last["state"] == "stopped"
    assert set(last["counters"]) >= {key for key, _, _ in COUNTERS}


def test_an_output_that_fails_ends_the_run_with_its_error():
    class Broken(Recording):
        def deliver(self, delivery: Delivery) -> None:
            raise OSError("disk gone")

    stop = threading.Event()
    stats = Stats()
    publisher = Publisher(
        NewestResults(), stats, stats.snapshot, source="cam", name=None, stop=stop, outputs=[Broken()]
    )
    publisher.start()
    publisher.offer(_result(1))
    assert stop.wait(2) and isinstance(publisher.error, OSError)
    assert publisher.stop(time.monotonic() + 1)


NOW = dict(
    uptime_s=100.0,
    source_state="open",
    api_state="ok",
    api_down_s=None,
    last_frame_age_s=0.1,
    last_result_age_s=0.5,
    last_result_frame_id=7,
    last_skip_age_s=None,
    api_quiet_s=0.0,
    capture_fps=30.0,
    send_per_s=5.0,
    inference_fps=5.0,
    result_age=None,
    request_latency=None,
    counters={key: 0 for key, _, _ in COUNTERS},
)


@pytest.mark.parametrize(
    "changes, problems",
    [
        ({}, []),
        ({"source_state": "reconnecting"}, ["source reconnecting"]),
        ({"last_frame_age_s": None}, ["no frame yet"]),
        ({"last_frame_age_s": 61.0}, ["no frame for 61 s"]),
        ({"last_result_age_s": None}, ["no result yet"]),
        ({"last_result_age_s": 90.0}, ["no result for 90 s"]),
        ({"last_result_age_s": 90.0, "last_skip_age_s": 2.0}, []),  # the gate or the budget skipped calls
        ({"last_result_age_s": 90.0, "api_quiet_s": 30.0}, []),  # the API asked for a wait (Retry-After)
        (
            {"api_state": "down", "api_down_s": 40.0, "api_failures": {"timeout": 3}, "last_result_age_s": 70.0},
            ["API down 40 s (timeout x3)", "no result for 70 s"],
        ),
    ],
)
def test_the_one_health_rule(changes, problems):
    from streamer.stats import Snapshot

    assert Snapshot(**{**NOW, **changes}).problems(60.0) == problems


def test_the_stop_summary_names_every_counter():
    snapshot = Stats().snapshot(frames_dropped=3, outputs_dropped={"jsonl": 2, "mqtt": 0})
    summary = snapshot.summary()
    for _, words, _ in COUNTERS:
        assert words in summary
    assert "3 dropped" in summary and "dropped by outputs: jsonl 2" in summary and "mqtt" not in summary


def test_rates_agree_with_the_counters():
    """Two results a second for ten seconds read 2.0/s (the old meter said 1.8), and the first
    second after the start is not read as a burst."""
    from streamer.stats import RateMeter

    clock = [100.0]
    meter = RateMeter(5.0, clock=lambda: clock[0])
    for i in range(20):
        meter.tick(100.0 + 0.5 * i)
    assert meter.rate(now=109.75) == 2.0
    fresh = RateMeter(5.0, clock=lambda: 200.0)
    for i in range(5):  # five frames in the first 0.2 s
        fresh.tick(200.0 + 0.05 * i)
    assert fresh.rate(now=200.2) == 5.0  # not 25 fps


@pytest.mark.parametrize(
    "age_s, shown",
    [(None, "newest result none yet"), (0.4671, "newest result 467 ms old"), (30.414, "newest result 30 s old")],
)
def test_the_status_line_says_one_age_in_units_a_person_reads(age_s, shown):
    from streamer.stats import Snapshot

    line = Snapshot(**{**NOW, "last_result_age_s": age_s}).line()
    assert shown in line and "dropped" not in line and line.count("age") == 0
