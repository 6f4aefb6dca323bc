"""Exponential backoff with jitter, Retry-After parsing, and a log-once-then-summarise helper."""

from __future__ import annotations

import email.utils
import logging
import random
import time


class Backoff:
    """Delays that double from ``initial_s`` up to ``max_s``, with +-``jitter`` spread.

    ``next_delay`` honours a server's Retry-After by never waiting less than it asks
    (up to an hour, a guard against absurd values); ``reset`` after a success starts again
    from the bottom.
    """

    RETRY_AFTER_LIMIT_S = 3600.0

    def __init__(
        self,
        initial_s: float = 0.5,
        max_s: float = 30.0,
        jitter: float = 0.2,
        rng: random.Random | None = None,
    ):
        if initial_s <= 0 or max_s < initial_s or not 0 <= jitter < 1:
            raise ValueError(f"bad backoff: initial_s={initial_s}, max_s={max_s}, jitter={jitter}")
        self.initial_s = initial_s
        self.max_s = max_s
        self.jitter = jitter
        self._rng = rng or random.Random()
        self.failures = 0

    def next_delay(self, retry_after_s: float | None = None) -> float:
        # The exponent is capped: after a day of failures, 2.0 ** failures would overflow.
        base = min(self.max_s, self.initial_s * 2.0 ** min(self.failures, 64))
        self.failures += 1
        delay = min(self.max_s, base * (1 + self._rng.uniform(-self.jitter, self.jitter)))
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.RETRY_AFTER_LIMIT_S))
        return delay

    def reset(self) -> None:
        self.failures = 0


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):  # unreadable: ValueError since Python 3.10
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


class FaultLog:
    """Logs a spell of faults (an outage) when it starts, at each doubling of its length
    (FIRST_REPORT_S, twice that, four times ...), and when it ends, instead of a line per retry:
    a day-long outage is about 15 lines.

    Faults that come and go (every other answer broken) would still make two lines each;
    so a spell that starts within ``summary_s`` of the last warning is not logged on its
    own: it is counted, and the count goes into the next warning."""

    FIRST_REPORT_S = 10.0  # the first "still failing" line comes after this long, then at each doubling
    QUIET_S = 30.0  # default summary_s

    def __init__(
        self, logger: logging.Logger, what: str, summary_s: float | None = None, action: str = "retrying with backoff"
    ):
        self._log = logger
        self._what = what
        self._action = action
        self._summary_s = self.QUIET_S if summary_s is None else summary_s
        self._count = 0  # faults in the current spell
        self._since = 0.0
        self._next_report_s = self.FIRST_REPORT_S  # spell length at which to say it goes on
        self._last_warning = float("-inf")
        self._reported = False  # whether the current spell's start was logged
        self._unreported = 0  # faults in short spells since the last warning

    @property
    def failing(self) -> bool:
        """Whether a spell of faults is in progress."""
        return self._count > 0

    def fault(self, message: str) -> None:
        now = time.monotonic()
        self._count += 1
        if self._count == 1:
            self._since = now
            self._next_report_s = self.FIRST_REPORT_S
            self._reported = now - self._last_warning >= self._summary_s
            if self._reported:
                self._warn(now, f"{self._what}: {message} ({self._action})")
                return
        length = now - self._since
        if length >= self._next_report_s and (self._reported or now - self._last_warning >= self._summary_s):
            while self._next_report_s <= length:  # the next doubling still ahead
                self._next_report_s *= 2
            self._reported = True
            self._warn(now, f"{self._what}: still failing, {self._count} failures in {length:.0f} s; last: {message}")
        elif not self._reported:
            self._unreported += 1

    def _warn(self, now: float, text: str) -> None:
        if self._unreported:
            text += f" (and {self._unreported} more in short spells since the last report)"
            self._unreported = 0
        self._last_warning = now
        self._log.warning("%s", text)

    def recovered(self) -> None:
        if self._count and self._reported:
            self._log.info(
                "%s: recovered after %d failures in %.1f s", self._what, self._count, time.monotonic() - self._since
            )
        self._count = 0
        self._reported = False
