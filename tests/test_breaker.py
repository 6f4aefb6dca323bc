"""The circuit breaker on its own: when it opens, how long it waits, and that a success closes it."""

import random

import pytest

from streamer.api.breaker import CircuitBreaker
from streamer.retry import Backoff


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def make(failures_to_open=3, clock=None):
    backoff = Backoff(0.5, 4.0, jitter=0.0, rng=random.Random(1))
    return CircuitBreaker(backoff, failures_to_open, clock=clock or Clock())


@pytest.mark.parametrize("retry_after, expected", [(None, 0.0), (1.5, 1.5), (10_000.0, 3600.0)])
def test_while_closed_a_failure_waits_only_for_retry_after(retry_after, expected):
    breaker = make()
    assert breaker.failure(retry_after) == expected
    assert not breaker.is_open and breaker.failures_in_row == 1


def test_opens_after_n_failures_in_a_row_then_probes_at_a_doubling_interval():
    clock = Clock()
    breaker = make(3, clock)
    assert [breaker.failure() for _ in range(2)] == [0.0, 0.0]
    assert breaker.failure() == 0.5 and breaker.is_open
    assert breaker.opened_at == 100.0
    delays = []
    for _ in range(5):
        delays.append(breaker.failure())  # a probe
    assert delays == [1.0, 2.0, 4.0, 4.0, 4.0]  # doubling to the cap
    clock.now = 130.0
    assert breaker.opened_at == 100.0 and breaker.success() == 30.0  # probes keep the time it opened


def test_retry_after_longer_than_the_backoff_is_honoured_while_open():
    breaker = make(1)
    assert breaker.failure(20.0) == 20.0 and breaker.is_open


def test_a_success_closes_it_and_says_how_long_it_was_open():
    clock = Clock()
    breaker = make(2, clock)
    breaker.failure()
    assert breaker.success() is None  # it was never open
    breaker.failure()
    breaker.failure()
    clock.now += 12.5
    assert breaker.success() == 12.5
    assert not breaker.is_open and breaker.failures_in_row == 0 and breaker.opened_at is None
    assert breaker.failure() == 0.0  # counting starts again from zero, and so does the backoff
    assert breaker.failure() == 0.5


def test_refuses_a_threshold_below_one():
    with pytest.raises(ValueError, match="at least 1"):
        make(0)


def test_requests_already_in_flight_when_it_opens_do_not_double_the_backoff():
    breaker = make(3)
    for _ in range(3):
        breaker.failure(probe=False)
    assert breaker.is_open
    # Five more that were sent before it opened come back failed: the wait stays at its first step.
    assert [breaker.failure(probe=False) for _ in range(5)] == [0.0] * 5
    assert breaker.failure(probe=True) == 1.0  # the first failed probe moves it on


def test_probes_that_cannot_connect_go_every_second_however_long_the_outage():
    """A refused connection never reached the API: after an hour of them the next probe is still
    at most UNSENT_PROBE_S away, while answers (503) and timeouts keep the full backoff."""
    from streamer.api.breaker import UNSENT_PROBE_S

    breaker = CircuitBreaker(Backoff(0.5, 30.0, jitter=0.0), 3)
    delays = [breaker.failure(unsent=True) for _ in range(3600)]
    assert breaker.is_open and max(delays) == UNSENT_PROBE_S == 1.0
    assert breaker.failure() == 30.0  # the API answers 503 now: the billable backoff stands
    assert breaker.failure(retry_after_s=120.0, unsent=False) == 120.0  # and Retry-After is honoured
