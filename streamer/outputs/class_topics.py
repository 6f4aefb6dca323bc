"""Per-class MQTT state: the count of each class in the newest result, and whether it is
detected (with an off delay), for a bounded set of classes under safe slugs.

Class names come from the API and are untrusted, so each one becomes a slug
(``streamer.names.class_slug``), and only the configured classes, or else the first
``max_classes`` seen, get topics: a model with thousands of labels, or one that makes up
names, cannot create topics without bound.  Pure state, no MQTT: ``update``, ``tick`` and
``reset`` return the (subtopic, payload) pairs that changed.

While the source or the API is down (``links``) nothing is known about the scene: the
states are reset (count 0, detected OFF) rather than left at the last result's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from streamer.names import class_slug

ON, OFF = "ON", "OFF"
# A source without a frame, or a failing API without a result, for this long reads down.
# With the 2 s heartbeat an outage shows within about 7 s.
LINK_MAX_AGE_S = 5.0


def links(status, max_age_s: float = LINK_MAX_AGE_S) -> tuple[bool, bool]:
    """(source up, API up) from a ``stats.Snapshot``.

    The source is up while it is open and frames come.  The API is up once it has answered,
    until its breaker opens or it has been failing with no result for ``max_age_s``: a
    single failed request, or a source outage (no requests at all), does not make it down."""
    source = status.source_state == "open" and (status.last_frame_age_s or 0.0) <= max_age_s
    stale = status.last_result_age_s is None or status.last_result_age_s > max_age_s
    api = status.api_state == "ok" or (status.api_state == "failing" and not stale)
    return source, api


@dataclass
class _ClassState:
    count: int = 0
    detected: str = OFF
    last_seen: float = float("-inf")


class ClassTopics:
    def __init__(self, configured: list[str] | tuple[str, ...] = (), max_classes: int = 20, off_delay_s: float = 5.0):
        self.fixed = bool(configured)  # configured classes: exactly those, none added
        self.max_classes = max_classes
        self.off_delay_s = off_delay_s
        self.ignored: set[str] = set()  # slugs seen beyond the cap (bounded too: only counted)
        self.ignored_count = 0
        self._states: dict[str, _ClassState] = {class_slug(name): _ClassState() for name in configured}

    def knows(self, slug: str) -> bool:
        return slug in self._states

    def adopt(self, slug: str) -> bool:
        """Take on a class a result names, or an earlier run announced (its retained topics), if
        there is room: not with configured classes, only a safe slug, and within ``max_classes``."""
        if slug in self._states:
            return True
        if self.fixed or len(self._states) >= self.max_classes or class_slug(slug) != slug:
            return False
        self._states[slug] = _ClassState()
        return True

    @property
    def slugs(self) -> list[str]:
        """The classes with topics, in the order they were added."""
        return list(self._states)

    def update(self, names: Iterable[str], now: float) -> tuple[list[str], list[tuple[str, str]]]:
        """Take the class names of one result: (slugs newly given topics, changed (subtopic, payload))."""
        counts = Counter(class_slug(name) for name in names)
        added = [slug for slug in counts if slug not in self._states and self.adopt(slug)]
        for slug in counts:  # those left without topics: beyond the cap
            if slug not in self._states and slug not in self.ignored:
                self.ignored_count += 1
                if len(self.ignored) < 1000:
                    self.ignored.add(slug)
        changes = []
        for slug, state in self._states.items():
            count = counts.get(slug, 0)
            if count != state.count or slug in added:
                state.count = count
                changes.append((f"{slug}/count", str(count)))
            if count:
                state.last_seen = now
        return added, changes + self.tick(now)

    def tick(self, now: float) -> list[tuple[str, str]]:
        """The detected states that changed: ON as soon as a class is seen, OFF once it has
        been absent for off_delay_s (called with each result and each heartbeat)."""
        changes = []
        for slug, state in self._states.items():
            want = ON if state.count or now - state.last_seen < self.off_delay_s else OFF
            if want != state.detected:
                state.detected = want
                changes.append((f"{slug}/detected", want))
        return changes

    def reset(self) -> list[tuple[str, str]]:
        """Nothing is known (an outage, or the exit): every count 0 and detected OFF, at once."""
        before = self.retained()
        for state in self._states.values():
            state.count, state.detected, state.last_seen = 0, OFF, float("-inf")
        return [pair for old, pair in zip(before, self.retained(), strict=True) if pair != old]

    def retained(self) -> list[tuple[str, str]]:
        """Every class's current state, to publish again after a (re)connect."""
        return [
            pair
            for slug, state in self._states.items()
            for pair in ((f"{slug}/count", str(state.count)), (f"{slug}/detected", state.detected))
        ]
