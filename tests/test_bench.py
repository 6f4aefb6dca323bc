"""Smoke checks of the bench scripts' pure helpers (the benches themselves take minutes)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import soak  # noqa: E402
import throughput  # noqa: E402


def test_latest_frame_gives_the_newest_frame_once_and_times_out_when_none_is_new():
    holder = throughput.LatestFrame()
    holder.put(1.0, "old")
    holder.put(2.0, "new")
    assert holder.take(0.1) == (2.0, "new")
    assert holder.take(0.05) is None  # already taken


def test_latest_frame_wakes_a_waiting_taker():
    holder = throughput.LatestFrame()
    taken = []
    taker = threading.Thread(target=lambda: taken.append(holder.take(5)))
    taker.start()
    holder.put(3.0, "frame")
    taker.join(5)
    assert not taker.is_alive()
    assert taken == [(3.0, "frame")]


OLD = {"capture_cpu_s": 1.0, "dispatch_cpu_s": 0.5, "request_cpu_s": 2.0, "output_cpu_s": 0.25, "steps_cpu_s": 1.5}
NEW = {"cpu_s": {"capture": 1.0, "dispatch": 0.5, "request": 2.0, "output": 0.25}}


@pytest.mark.parametrize(
    "counters, expected",
    [
        (NEW, {"capture": 1.0, "dispatch": 0.5, "request": 2.0, "output": 0.25}),
        (OLD, {"capture": 1.0, "dispatch": 0.5, "request": 2.0, "output": 0.25}),
        ({"requests": 10}, {}),
    ],
)
def test_thread_cpu_reads_the_new_mapping_or_the_old_fields_or_nothing(counters, expected):
    assert throughput.thread_cpu_s(counters) == expected


def double(counters: dict) -> dict:
    if "cpu_s" in counters:
        return {"cpu_s": {k: 2 * v for k, v in counters["cpu_s"].items()}}
    return {k: 2 * v for k, v in counters.items()}


@pytest.mark.parametrize("counters, steps", [(NEW, False), (OLD, True)])
def test_thread_breakdown_takes_the_capture_thread_out_of_the_client(counters, steps):
    # Over the window: capture 1 s, dispatch 0.5, request 2, output 0.25; the process 5 s.
    out = throughput.thread_breakdown(counters, double(counters), 5.0, calls=100, frames=200)
    assert out["client_cpu_ms_per_call"] == 40.0  # (5 - 1) s over 100 calls
    assert out["client_cpu_ms_per_call_by_thread"] == {"dispatch": 5.0, "request": 20.0, "output": 2.5, "other": 12.5}
    assert out["capture_cpu_ms_per_frame"] == 5.0
    assert ("steps_cpu_ms_per_call" in out) == steps


def test_thread_breakdown_is_empty_without_per_thread_counters():
    assert throughput.thread_breakdown({"requests": 1}, {"requests": 2}, 5.0, calls=100, frames=200) == {}


def row(results_per_s: float, age_p95_ms: float, cpu_ms: float | None) -> dict:
    return {
        "results_per_s": results_per_s,
        "age_p50_ms": age_p95_ms - 20,
        "age_p95_ms": age_p95_ms,
        "process_cpu_ms_per_result": cpu_ms,
    }


@pytest.mark.parametrize(
    "obvious, streamer, met",
    [
        (row(20, 350, 4.0), row(22, 380, 4.0), (True, True, True)),  # exactly on every target
        (row(20, 350, 4.0), row(21.9, 381, 4.01), (False, False, False)),
        (row(20, 350, None), row(25, 300, 3.0), (True, True, False)),  # no CPU figure: not met
        (row(0, 350, 4.0), row(1, 350, 4.0), (True, True, True)),  # the obvious client got nothing
    ],
)
def test_compare_checks_the_three_targets_of_issue_12(obvious, streamer, met):
    c = throughput.compare(obvious, streamer)
    assert (c["results_per_s_met"], c["age_p95_met"], c["cpu_per_result_met"]) == met


def test_comparisons_pair_streamer_rows_with_the_obvious_row_of_the_same_latency_and_n():
    rows = [
        {"latency_ms": 300.0, "in_flight": n, "client": client, **row(20 + n, 350, 4.0)}
        for n in (4, 8)
        for client in ("obvious", "streamer")
    ]
    rows.append({"latency_ms": 300.0, "in_flight": 2, "client": "streamer", **row(10, 350, 4.0)})
    pairs = throughput.comparisons(rows)
    assert [(c["latency_ms"], c["in_flight"]) for c in pairs] == [(300.0, 4), (300.0, 8)]
    assert pairs[1]["results_per_s"] == [28, 28]


def test_in_order_keeps_the_results_that_move_forward():
    captured = [1.0, 3.0, 2.0, 4.0, 2.5, 5.0]
    kept = throughput.in_order([{"captured_at": t} for t in captured])
    assert [r["captured_at"] for r in kept] == [1.0, 3.0, 4.0, 5.0]
    assert throughput.in_order([]) == []


@pytest.mark.parametrize("times, expected", [([], 0.0), ([5.0], 0.0), ([5.0, 5.0], 0.0), ([0.0, 0.5, 2.0], 1.0)])
def test_per_second(times, expected):
    assert throughput.per_second(times) == expected


def test_every_soak_scenario_holds_hung_requests_past_the_default_api_timeout():
    for name, spell_s, make in soak.SCENARIOS:
        assert spell_s > 0
        if make is None:  # connections refused: the server is stopped, nothing is held
            continue
        fault = make()
        if fault.hang_s:
            assert fault.hang_s > 10.0, name  # api.timeout_s's default
        else:
            assert fault.status == 200 and fault.raw_body.startswith(b"<"), name
