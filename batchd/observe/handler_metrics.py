"""What handlers record with ``metrics_client``, exposed as ``batchd_handler_<metric>``.

A worker sends what its handler recorded with its reports (batchd.wire.metrics); the
scheduler hands each payload here. A Prometheus series is one metric name with one set of
tag values under one API (label ``api_name``, as Cortex labelled them): a counter sums
the increments, a gauge keeps the last value, a histogram counts into Prometheus's default
buckets.

A handler cannot blow up the registry: an API has at most SERIES_MAX series here, and a
recording that would make one more, or that uses a name with another kind or other tag
keys than its first use (in any API: one name is one family), or whose exposed names
would clash with another family's, is dropped and counted in
``batchd_handler_series_dropped_total{api_name}``. What a worker refused itself (a bad
name or value) is counted in ``batchd_handler_metrics_invalid_total{api_name}``.
Each daemon exposes what its own workers recorded.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from batchd.wire.metrics import BUCKETS, SERIES_MAX, Recorded, read_metrics

PREFIX = "batchd_handler_"
DROPPED = "batchd_handler_series_dropped"
INVALID = "batchd_handler_metrics_invalid"
_BUCKET_NAMES = [*(repr(float(bound)) for bound in BUCKETS), "+Inf"]
_DOCUMENTATION = {
    "c": "Counter recorded by the handler (metrics_client.increment).",
    "g": "Gauge recorded by the handler (metrics_client.gauge).",
    "h": "Histogram recorded by the handler (metrics_client.histogram).",
}


@dataclass
class _Family:
    kind: str
    # Tag keys, in order; every series of the family has these.
    keys: tuple[str, ...]
    # (api name, *tag values) -> the value (c, g), or [sum, count per bucket then +Inf] (h)
    series: dict[tuple[str, ...], Any] = field(default_factory=dict)


def exposed_names(kind: str, name: str) -> set[str]:
    """The family name and sample names the text format shows for a family `name`."""
    full = PREFIX + name
    if kind == "c":
        base = full.removesuffix("_total")
        return {base, f"{base}_total"}
    if kind == "h":
        return {full, f"{full}_bucket", f"{full}_count", f"{full}_sum"}
    return {full}


class HandlerMetrics(Collector):
    def __init__(self, registry: CollectorRegistry, series_max: int = SERIES_MAX) -> None:
        self.series_max = series_max
        self._families: dict[str, _Family] = {}
        self._series_of: dict[str, int] = {}
        self._taken = {DROPPED, f"{DROPPED}_total", INVALID, f"{INVALID}_total"}
        self._dropped = Counter(
            DROPPED,
            "Handler metric recordings dropped: a series over the API's limit of "
            f"{series_max}, or a name used with another kind or other tags than at first.",
            ["api_name"],
            registry=registry,
        )
        self._invalid = Counter(
            INVALID,
            "Handler metric recordings the worker refused: a name, tag or value it could not use.",
            ["api_name"],
            registry=registry,
        )
        registry.register(self)

    def record(self, api: str, payload: Mapping[str, Any]) -> None:
        """A report's ``metrics``; BadFrame when the worker could not have sent them."""
        recorded = read_metrics(payload)
        dropped = recorded.dropped
        for entry in recorded.series:
            if not self._add(api, entry):
                dropped += 1
        if dropped:
            self._dropped.labels(api).inc(dropped)
        if recorded.invalid:
            self._invalid.labels(api).inc(recorded.invalid)

    def _add(self, api: str, entry: Recorded) -> bool:
        keys = tuple(key for key, _ in entry.tags)
        family = self._families.get(entry.name)
        if family is None:
            names = exposed_names(entry.kind, entry.name)
            if self._series_of.get(api, 0) >= self.series_max or names & self._taken:
                return False
            family = self._families[entry.name] = _Family(entry.kind, keys)
            self._taken |= names
        elif family.kind != entry.kind or family.keys != keys:
            return False
        labels = (api, *(value for _, value in entry.tags))
        current = family.series.get(labels)
        if current is None:
            count = self._series_of.get(api, 0)
            if count >= self.series_max:
                return False
            self._series_of[api] = count + 1
        if entry.kind == "g":
            family.series[labels] = entry.value
        elif entry.kind == "c":
            family.series[labels] = (current or 0.0) + entry.value  # type: ignore[operator]
        else:
            _, total, buckets = entry.value  # type: ignore[misc]
            if current is None:
                current = family.series[labels] = [0.0] * (len(BUCKETS) + 2)
            current[0] += total
            for index, observed in enumerate(buckets, start=1):
                current[index] += observed
        return True

    def collect(self) -> Iterator[Metric]:
        for name, family in sorted(self._families.items()):
            labels = ["api_name", *family.keys]
            documentation = _DOCUMENTATION[family.kind]
            if family.kind == "h":
                histogram = HistogramMetricFamily(PREFIX + name, documentation, labels=labels)
                for values, (total, *counts) in family.series.items():
                    cumulative, buckets = 0.0, []
                    for bucket, count in zip(_BUCKET_NAMES, counts, strict=True):
                        cumulative += count
                        buckets.append((bucket, cumulative))
                    histogram.add_metric(list(values), buckets, total)
                yield histogram
                continue
            kind = CounterMetricFamily if family.kind == "c" else GaugeMetricFamily
            metric = kind(PREFIX + name, documentation, labels=labels)
            for values, value in family.series.items():
                metric.add_metric(list(values), value)
            yield metric
