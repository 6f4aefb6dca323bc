"""Prometheus metrics for /metrics, through prometheus_client, in a registry of streamer's own.

Counters and gauges are read from a stats snapshot when scraped; the histograms and the
detections per class are fed from each published detections message.  Label values that come
from outside (class names, failure kinds) are escaped by prometheus_client, cut to
``MAX_LABEL_CHARS`` and capped at ``MAX_LABELS`` values each; the rest count as "other"."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from streamer.stats import COUNTERS, Snapshot
from streamer.types import Delivery

MAX_LABELS = 50
MAX_LABEL_CHARS = 64
OTHER = "other"
AGE_BUCKETS_S = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class LabelCap:
    """The first ``limit`` distinct values pass (cut to ``MAX_LABEL_CHARS``); later ones are "other"."""

    def __init__(self, limit: int = MAX_LABELS):
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: object) -> str:
        text = str(value)[:MAX_LABEL_CHARS]
        if text not in self._seen and len(self._seen) >= self.limit:
            return OTHER
        self._seen.add(text)
        return text


class _StatsCollector:
    """Reads the counters and gauges from a fresh snapshot at each scrape."""

    def __init__(self, snapshot: Callable[[], Snapshot]):
        self.snapshot = snapshot
        self.failure_kind = LabelCap()

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot()
        for key, _, text in COUNTERS:
            yield CounterMetricFamily(f"streamer_{key}", text, value=s.counters[key])
        skipped = s.counters["skipped_no_change"] + s.counters["skipped_budget"]
        yield CounterMetricFamily("streamer_skipped_calls", "Calls not made (motion gate, call budget)", value=skipped)
        failures: dict[str, int] = {}
        for kind, count in s.api_failures.items():
            label = self.failure_kind(kind)
            failures[label] = failures.get(label, 0) + count
        for name, text, label, counts in (
            ("streamer_api_failures", "Failed API calls by kind", "kind", failures),
            ("streamer_output_dropped", "Messages an output could not take", "output", s.outputs_dropped),
        ):
            family = CounterMetricFamily(name, text, labels=[label])
            for value, count in sorted(counts.items()):
                family.add_metric([value], count)
            yield family
        age = s.last_result_age_s
        for name, text, value in (
            ("streamer_capture_fps", "Frames read a second", s.capture_fps),
            ("streamer_inference_fps", "Results a second", s.inference_fps),
            (
                "streamer_result_age_seconds",
                "Age of the newest result (NaN before the first)",
                float("nan") if age is None else age,
            ),
            (
                "streamer_api_up",
                "1 while the API answers (state ok or starting)",
                float(s.api_state in ("ok", "starting")),
            ),
            ("streamer_source_up", "1 while the source is open", float(s.source_state == "open")),
            ("streamer_uptime_seconds", "Seconds since start", s.uptime_s),
        ):
            yield GaugeMetricFamily(name, text, value=value)


class Metrics:
    """streamer's own registry: the Stats collector, two histograms and detections per class."""

    def __init__(self, snapshot: Callable[[], Snapshot]):
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_StatsCollector(snapshot))
        self.result_age = Histogram(
            "streamer_result_age_at_publish_seconds",
            "From capture to publish, of fresh results",
            buckets=AGE_BUCKETS_S,
            registry=self.registry,
        )
        self.request_latency = Histogram(
            "streamer_request_latency_seconds",
            "From sending a request to its answer",
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.detections = Counter(
            "streamer_detections", "Predictions published, by class", ["class_name"], registry=self.registry
        )
        self.class_name = LabelCap()

    def observe(self, delivery: Delivery) -> None:
        """Feed one published detections message (its result is set) to the histograms and the class counts."""
        result, message = delivery.result, delivery.message
        if not result.reused:
            self.result_age.observe(max(0.0, float(message["published_at"]) - result.captured_at))
            self.request_latency.observe(max(0.0, result.received_at - result.sent_at))
        for name in result.class_names():
            self.detections.labels(self.class_name(name)).inc()

    def text(self) -> bytes:
        return generate_latest(self.registry)
