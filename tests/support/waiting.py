"""Waiting for what a test checks, with a deadline, instead of sleeping and hoping.

wait_until(lambda: stats.results >= 3, 10, "three results")   # fails the test, naming what it waited for
assert wait_until(lambda: server.in_flight == 0, 5)           # without ``what``: True or False
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout_s: float, what: str | Callable[[], str] | None = None) -> T:
    """Poll ``condition`` until it is truthy or ``timeout_s`` has passed; return its last value.

    With ``what`` (a text, or a function that says the state at the time), a timeout fails the
    test with "waited N s for WHAT" rather than returning a falsy value for an ``assert``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value or time.monotonic() >= deadline:
            break
        time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))
    if not value and what is not None:
        pytest.fail(f"waited {timeout_s:g} s for {what() if callable(what) else what}")
    return value
