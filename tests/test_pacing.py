"""Pacing, the call budget, the motion gate and newest-wins results, without threads or sockets."""

import time

import numpy as np
import pytest

from streamer.live.pacing import CallBudget, MotionGate, Pacing
from streamer.live.publisher import NewestResults
from streamer.types import Result


class Clock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def test_one_request_at_a_time_until_a_latency_is_known_then_n_spaced_l_over_n():
    clock = Clock()
    pacing = Pacing(4, None, clock)
    assert pacing.capacity() == 1 and pacing.wait_s(0) == 0 and pacing.wait_s(1) is None
    pacing.sent()
    for _ in range(5):
        pacing.record_latency(0.300)
    assert pacing.capacity() == 4
    assert pacing.interval_s() == pytest.approx(0.075)
    assert pacing.wait_s(4) is None  # at capacity
    sends = []
    for _ in range(8):  # a dispatcher that sends whenever it may
        wait = pacing.wait_s(1)
        clock.now += wait
        sends.append(clock.now)
        pacing.sent()
    gaps = np.diff(sends)
    assert gaps == pytest.approx([0.075] * 7)


@pytest.mark.parametrize("max_fps, latency, expected", [(2.0, 0.1, 0.5), (10.0, 0.6, 0.3), (None, 0.6, 0.3)])
def test_the_interval_is_the_larger_of_latency_over_n_and_one_over_max_fps(max_fps, latency, expected):
    pacing = Pacing(2, max_fps, Clock())
    pacing.record_latency(latency)
    assert pacing.interval_s() == pytest.approx(expected)


def test_a_late_send_keeps_the_rhythm_but_an_idle_spell_does_not_bank_slots():
    clock = Clock()
    pacing = Pacing(2, 10.0, clock)  # 0.1 s apart
    pacing.record_latency(0.05)
    pacing.sent()
    assert pacing.next_send_at == pytest.approx(1000.1)
    clock.now = 1000.13  # sent 30 ms late: the next slot is still 1000.2
    pacing.sent()
    assert pacing.next_send_at == pytest.approx(1000.2)
    clock.now = 1005.0  # after 5 s idle, no burst of 50 slots
    pacing.sent()
    assert pacing.next_send_at == pytest.approx(1005.1)


def test_the_latency_is_the_median_of_recent_requests_so_one_outlier_does_not_stall_pacing():
    pacing = Pacing(4, None, Clock())
    for latency in (0.3, 0.3, 0.3, 9.0, 0.3):
        pacing.record_latency(latency)
    assert pacing.latency_s == 0.3


def test_call_budget_per_hour_warns_once_and_opens_again_in_the_next_hour(caplog):
    start = time.mktime((2026, 11, 27, 10, 59, 0, 0, 0, -1))  # local 10:59
    clock = Clock(start)
    budget = CallBudget(3, "hour", clock)
    for _ in range(3):
        assert not budget.exhausted()
        budget.spend()
    with caplog.at_level("WARNING"):
        assert budget.exhausted() and budget.exhausted()
    warnings = [r.getMessage() for r in caplog.records if "budget" in r.getMessage()]
    assert warnings == ["call budget spent: 3 calls this hour; no calls until 11:00 (the preview keeps running)"]
    clock.now = start + 61  # 11:00:01, the next window
    assert not budget.exhausted() and budget.spent == 0


def test_call_budget_per_day_ends_at_local_midnight():
    clock = Clock(time.mktime((2026, 11, 27, 23, 30, 0, 0, 0, -1)))
    budget = CallBudget(1, "day", clock)
    assert time.localtime(budget.window_end())[:6] == (2026, 11, 28, 0, 0, 0)
    assert CallBudget(None).exhausted() is False  # no budget, never spent


def test_motion_gate_skips_a_still_scene_and_sends_a_change():
    rng = np.random.default_rng(1)
    scene = rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    gate = MotionGate(0.02)
    thumb = MotionGate.thumbnail
    assert gate.worth_sending(thumb(scene))  # nothing answered yet
    gate.sent(thumb(scene))
    noisy = np.clip(scene.astype(int) + rng.integers(-6, 7, scene.shape), 0, 255).astype(np.uint8)
    assert not gate.worth_sending(thumb(noisy))  # sensor noise is not a change
    moved = scene.copy()
    moved[200:500, 300:700] = 255  # something entered a sixth of the frame
    assert gate.worth_sending(thumb(moved))
    off = MotionGate(0)
    off.sent(thumb(scene))
    assert not off.enabled and off.worth_sending(thumb(scene))  # off: always send


def _result(frame_id):
    return Result("cam", frame_id, 0.0, 0.0, 64, 64, model="m/1")


def test_newest_results_drop_late_ones_and_keep_the_accepted_in_order():
    results = NewestResults()
    for i in (1, 3, 2, 3, 5):
        results.offer(_result(i))
    assert [r.frame_id for r in results.drain()] == [1, 3, 5]
    assert results.late == 2 and results.accepted == 3
    assert results.offer(_result(4)) is False and results.late == 3  # older than one released
    assert results.drain() == [] and results.latest.frame_id == 5


def test_newest_results_hold_an_early_answer_until_its_release_time():
    results = NewestResults()
    results.offer(_result(2), release_at=10.0)  # came back early: held
    results.offer(_result(1), release_at=9.5)  # sent before it, came back after it
    assert results.next_release() == 9.5
    assert results.drain(now=9.0) == []
    assert [r.frame_id for r in results.drain(now=9.6)] == [1]  # the held-back order is kept
    assert [r.frame_id for r in results.drain(now=10.0)] == [2] and results.late == 0
