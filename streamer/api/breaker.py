"""A circuit breaker for the detection API: stop sending every frame to an API that is down.

    closed --(N failures in a row)--> open --(a probe succeeds)--> closed

While closed, a failure only waits for what the server asked (Retry-After) and the next
frame is tried.  Once ``failures_to_open`` requests in a row have failed, the breaker opens:
one request (a probe, on the newest frame) is sent per backoff interval, the interval
doubling up to its cap, until one succeeds.  So an API that heals is used again within one
backoff interval, and an API that stays down costs one request per interval, not one per
frame.

A probe that could not even connect (refused, no route) never reached the API: it costs
nothing, so those probes go at least every ``UNSENT_PROBE_S``, whatever the backoff has grown
to, and an API that comes back after a long outage is used again within a few seconds.  Answers
(429, 5xx) and timeouts keep the full backoff, and Retry-After is always honoured.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from streamer.retry import Backoff

UNSENT_PROBE_S = 1.0  # the longest wait between probes that cannot connect


class CircuitBreaker:
    """Counts consecutive failures and says how long to pause before the next request."""

    def __init__(self, backoff: Backoff, failures_to_open: int = 3, clock: Callable[[], float] = time.monotonic):
        if failures_to_open < 1:
            raise ValueError(f"failures_to_open must be at least 1, got {failures_to_open}")
        self.backoff = backoff
        self.failures_to_open = failures_to_open
        self._clock = clock
        self.failures_in_row = 0
        self.opened_at: float | None = None  # clock time the breaker opened; None while closed

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def failure(self, retry_after_s: float | None = None, probe: bool = True, unsent: bool = False) -> float:
        """Record a failed request; the seconds to wait before the next one.

        ``probe`` says whether the request was sent while the breaker was open.  Requests
        that were already in flight when it opened fail too, but only a failed probe moves
        the backoff on: eight requests in flight must not double it eight times.  ``unsent``:
        no connection was made (see the module's docstring)."""
        self.failures_in_row += 1
        if not self.is_open and self.failures_in_row >= self.failures_to_open:
            self.opened_at = self._clock()
        elif not (self.is_open and probe):  # neither opening nor a failed probe: only Retry-After
            return min(retry_after_s or 0.0, Backoff.RETRY_AFTER_LIMIT_S)
        delay = self.backoff.next_delay(retry_after_s)
        return min(delay, UNSENT_PROBE_S) if unsent else delay

    def success(self) -> float | None:
        """Record a success; if it closed an open breaker, how long it had been open (s)."""
        was_open_for = self._clock() - self.opened_at if self.is_open else None
        self.failures_in_row = 0
        self.opened_at = None
        self.backoff.reset()
        return was_open_for
