"""metrics_client: a handler's counters, gauges and histograms on the daemon's /metrics.

Pure tests of the worker's merging, the payload on the channel and the daemon's
registry (names, the series cap, conflicting uses), then a real handler in a real daemon.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from batchd.observe.handler_metrics import HandlerMetrics
from batchd.wire import framing
from batchd.wire.messages import Completed, Next, from_worker
from batchd.wire.metrics import BUCKETS, MAX_TAGS, label_name, metric_name, read_metrics
from batchd.worker.metrics_client import MetricsClient
from tests.conftest import Daemon, wait_for, wait_job
from tests.test_metrics import scrape, value

Project = Callable[..., Path]


def samples_of(registry: CollectorRegistry) -> list[Sample]:
    text = generate_latest(registry).decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def through_channel(payload: dict[str, Any] | None) -> dict[str, Any] | None:
    """`payload` as the daemon reads it from a worker's `next` report."""
    frame = Next(3, [], [], payload).encode()
    return from_worker(framing.decode(frame[framing.FRAME_HEADER_BYTES :])).metrics  # type: ignore[union-attr]


# -- names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("my_counter", "my_counter"),
        ("inference.time-ms", "inference_time_ms"),
        ("9lives", "_9lives"),
        ("caf\u00e9", "caf_"),
        ("a:b", "a_b"),
        ("", None),
        ("x" * 201, None),
        ("x" * 200, "x" * 200),
        ("9" * 200, None),  # "_" and 200 digits: over the limit the daemon checks
        (None, None),
        (7, None),
    ],
)
def test_metric_names_are_sanitised_to_prometheus_rules(raw: object, expected: str | None) -> None:
    assert metric_name(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("model", "model"),
        ("model.version", "model_version"),
        ("api_name", None),
        ("le", None),
        ("__name__", None),
        ("", None),
    ],
)
def test_tag_keys_become_label_names_and_reserved_ones_are_refused(
    raw: object, expected: str | None
) -> None:
    assert label_name(raw) == expected


# -- the worker's client and the payload ----------------------------------------------------


def test_recordings_are_merged_between_reports_and_survive_the_channel() -> None:
    client = MetricsClient()
    assert client.take() is None
    client.increment("calls", tags={"model": "v1"})
    client.increment("calls", 2, tags={"model": "v1"})
    client.increment("calls", value=0.5, tags={"model": "v2"})
    client.gauge("queue", 3)
    client.gauge("queue", 7.5)
    client.histogram("latency", 0.01)
    client.histogram("latency", 0.3)
    client.histogram("latency", 99)
    read = read_metrics(through_channel(client.take()) or {})
    assert client.take() is None
    by_key = {(r.kind, r.name, r.tags): r.value for r in read.series}
    bucket_01 = [0] * (len(BUCKETS) + 1)
    bucket_01[BUCKETS.index(0.01)] += 1
    bucket_01[BUCKETS.index(0.5)] += 1
    bucket_01[-1] += 1
    assert by_key == {
        ("c", "calls", (("model", "v1"),)): 3.0,
        ("c", "calls", (("model", "v2"),)): 0.5,
        ("g", "queue", ()): 7.5,
        ("h", "latency", ()): (3, 99.31, bucket_01),
    }
    assert (read.dropped, read.invalid) == (0, 0)


def test_bad_recordings_never_raise_and_are_counted() -> None:
    class Unprintable:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    class BadTags(dict[str, str]):
        def items(self) -> Any:
            raise RuntimeError("tags broke")

    client = MetricsClient()
    client.increment("", 1)
    client.increment(None, 1)  # type: ignore[arg-type]
    client.increment(["unhashable"], 1)  # type: ignore[arg-type]
    client.increment(Unprintable(), 1)  # type: ignore[arg-type]
    client.increment("n", -1)
    client.increment("n", "1")  # type: ignore[arg-type]
    client.gauge("n", math.nan)
    client.gauge("n", math.inf)
    client.histogram("n", True)
    client.gauge("n", 10**400)
    client.gauge("n", 1, tags={"api_name": "x"})
    client.gauge("n", 1, tags={"a.b": "x", "a_b": "y"})
    client.gauge("n", 1, tags={"k": "\udcff"})
    client.gauge("n", 1, tags={"k": "v" * 1001})
    client.gauge("n", 1, tags=BadTags(k="v"))
    client.gauge("n", 1, tags=["not", "a", "mapping"])  # type: ignore[arg-type]
    client.gauge("n", 1, tags={f"k{index}": "v" for index in range(MAX_TAGS + 1)})
    client.increment("big", 1e308)
    client.increment("big", 1e308)  # the sum would be inf
    client.histogram("big", 1e308)
    client.histogram("big", 1e308)
    client.gauge("9" * 200, 1)
    client.gauge("n", 1, tags={"9" * 200: "v"})
    client.gauge("ok", 1, tags={"k": 5})  # a value that is not text is its str()
    taken = through_channel(client.take())
    assert taken is not None
    read = read_metrics(taken)
    assert read.invalid == 21
    assert [(r.name, r.tags) for r in read.series] == [
        ("big", ()),
        ("big", ()),
        ("ok", (("k", "5"),)),
    ]


def test_series_past_the_cap_are_dropped_and_counted_in_the_worker() -> None:
    client = MetricsClient(series_max=10)
    for index in range(25):
        client.increment("c", tags={"i": str(index)})
    client.increment("c", tags={"i": "3"})  # a series it holds still counts
    read = read_metrics(client.take() or {})
    assert len(read.series) == 10
    assert read.dropped == 15
    assert {r.tags: r.value for r in read.series}[(("i", "3"),)] == 2.0


def test_completed_carries_metrics_and_leaves_them_out_when_none() -> None:
    assert b"metrics" not in Completed(True).encode()
    assert b"metrics" not in Next(1, [], []).encode()
    frame = Completed(True, metrics={"series": [["g", "x", [], 1]]}).encode()
    decoded = from_worker(framing.decode(frame[framing.FRAME_HEADER_BYTES :]))
    assert isinstance(decoded, Completed) and decoded.metrics == {"series": [["g", "x", [], 1]]}


@pytest.mark.parametrize(
    "payload",
    [
        {"series": "x"},
        {"series": [["c", "x", [], 1]], "dropped": "1"},
        {"series": [["z", "x", [], 1]]},
        {"series": [["c", "bad name", [], 1]]},
        {"series": [["c", "x", [["api_name", "y"]], 1]]},
        {"series": [["c", "x", [["k", 1]], 1]]},
        {"series": [["c", "x", [], "1"]]},
        {"series": [["h", "x", [], [1, 1.0, [1]]]]},
        {"series": [["c", "x", []]]},
        {"series": [["g", "x", [], 10**400]]},
        # What would reach prometheus_client and raise there (the daemon's own failure,
        # not charged to the worker), or break every later scrape, or stay in memory:
        {"dropped": -1},
        {"invalid": 10**400},
        {"series": [["c", "x", [], -1]]},
        {"series": [["h", "x", [], [1, 1.0, [10**400] + [0] * len(BUCKETS)]]]},
        {"series": [["c", "x", [["k", "\ud800"]], 1]]},
        {"series": [["c", "x", [["k", "v" * 1001]], 1]]},
        {"series": [["c", "x" * 201, [], 1]]},
        {"series": [["c", "x", [[f"k{index}", "v"] for index in range(MAX_TAGS + 1)], 1]]},
    ],
)
def test_metrics_a_worker_could_not_have_sent_break_the_channel(payload: dict[str, Any]) -> None:
    with pytest.raises(framing.BadFrame):
        read_metrics(payload)


# -- the daemon's registry ------------------------------------------------------------------


def test_registry_caps_series_per_api_and_drops_conflicting_uses() -> None:
    registry = CollectorRegistry()
    metrics = HandlerMetrics(registry, series_max=3)
    metrics.record(
        "a",
        {
            "series": [
                ["c", "calls", [["m", "1"]], 2],
                ["c", "calls", [["m", "2"]], 1],
                ["g", "calls", [["m", "1"]], 5],  # another kind: dropped
                ["c", "calls", [["other", "1"]], 5],  # other tag keys: dropped
                ["g", "calls_total", [], 5],  # would show as the counter's sample: dropped
                ["g", "series_dropped_total", [], 1],  # batchd's own: dropped
                ["h", "lat", [], [1, 0.2, [0] * 6 + [1] + [0] * 8]],
                ["g", "lat_count", [], 1],  # the histogram's sample: dropped
                ["c", "calls", [["m", "3"]], 1],  # a 4th series of API a: dropped
            ],
            "dropped": 4,
            "invalid": 2,
        },
    )
    metrics.record("a", {"series": [["c", "calls", [["m", "1"]], 3]]})
    metrics.record("b", {"series": [["c", "calls", [["m", "1"]], 1]]})
    samples = samples_of(registry)
    handler = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for s in samples
        if s.name.startswith("batchd_handler_") and not s.name.endswith(("_bucket", "_created"))
    }
    assert handler == {
        ("batchd_handler_calls_total", (("api_name", "a"), ("m", "1"))): 5.0,
        ("batchd_handler_calls_total", (("api_name", "a"), ("m", "2"))): 1.0,
        ("batchd_handler_calls_total", (("api_name", "b"), ("m", "1"))): 1.0,
        ("batchd_handler_lat_count", (("api_name", "a"),)): 1.0,
        ("batchd_handler_lat_sum", (("api_name", "a"),)): 0.2,
        ("batchd_handler_series_dropped_total", (("api_name", "a"),)): 4.0 + 6.0,
        ("batchd_handler_metrics_invalid_total", (("api_name", "a"),)): 2.0,
    }
    buckets = {s.labels["le"]: s.value for s in samples if s.name == "batchd_handler_lat_bucket"}
    assert buckets["0.1"] == 0 and buckets["0.25"] == 1 and buckets["+Inf"] == 1


# -- a real handler in a real daemon ---------------------------------------------------------

RECORDING = """
class Handler:
    def __init__(self, config, metrics_client):
        self.metrics = metrics_client
        self.metrics.increment("inits")

    def handle_batch(self, payload, batch_id):
        for item in payload:
            self.metrics.increment(metric="items", value=item, tags={"model": "v1"})
            self.metrics.gauge(metric="last_item", value=item, tags={"model": "v1"})
            self.metrics.histogram(metric="item_seconds", value=item / 10, tags={"model": "v1"})
        self.metrics.increment("batches.done", tags={"parity": str(len(payload) % 2)})

    def on_job_complete(self):
        self.metrics.gauge("completed", 1)
"""

CARELESS = """
class Handler:
    def __init__(self, metrics_client):
        self.metrics = metrics_client

    def handle_batch(self, payload):
        for index in range(payload[0]):
            self.metrics.increment("requests", tags={"user": f"u{index}"})
        self.metrics.increment("", 1)
        self.metrics.gauge("ok", float("nan"))
        self.metrics.increment("x", tags={"api_name": "spoofed"})
        self.metrics.histogram(None, 1)
        self.metrics.gauge("fine", 1)
"""


def test_a_handler_s_metrics_reach_the_daemon_s_metrics(
    daemon: Daemon, make_project: Project
) -> None:
    client = daemon.client
    client.deploy(make_project("recorder", RECORDING))
    job = client.submit(
        "recorder", {"workers": 1, "item_list": {"items": [1, 2, 3, 4, 5], "batch_size": 2}}
    )
    assert wait_job(client, "recorder", job["job_id"])["status"] == "succeeded"
    v1 = {"api_name": "recorder", "model": "v1"}

    def observed() -> tuple[float | None, ...]:
        samples = scrape(daemon)
        return (
            value(samples, "batchd_handler_items_total", **v1),
            value(samples, "batchd_handler_last_item", **v1),
            value(samples, "batchd_handler_item_seconds_count", **v1),
            value(samples, "batchd_handler_item_seconds_sum", **v1),
            value(samples, "batchd_handler_batches_done_total", api_name="recorder", parity="0"),
            value(samples, "batchd_handler_batches_done_total", api_name="recorder", parity="1"),
            value(samples, "batchd_handler_inits_total", api_name="recorder"),
            value(samples, "batchd_handler_completed", api_name="recorder"),
        )

    # Recorded in handle_batch, in __init__ (sent with the first ask) and in on_job_complete.
    expected = (15.0, 5.0, 5.0, 1.5, 2.0, 1.0, 1.0, 1.0)
    wait_for(lambda: observed() == pytest.approx(expected), timeout=10, what=f"{observed()}")
    buckets = {
        s.labels["le"]: s.value
        for s in scrape(daemon)
        if s.name == "batchd_handler_item_seconds_bucket"
    }
    assert (buckets["0.1"], buckets["0.25"], buckets["0.5"], buckets["+Inf"]) == (1, 2, 5, 5)


def test_a_careless_handler_cannot_blow_up_the_registry_nor_fail(
    daemon: Daemon, make_project: Project
) -> None:
    client = daemon.client
    client.deploy(make_project("careless", CARELESS))
    job = client.submit("careless", {"item_list": {"items": [5000], "batch_size": 1}})
    assert wait_job(client, "careless", job["job_id"])["status"] == "succeeded"

    def observed() -> tuple[int, float | None, float | None, float | None]:
        samples = scrape(daemon)
        return (
            sum(1 for s in samples if s.name == "batchd_handler_requests_total"),
            value(samples, "batchd_handler_series_dropped_total", api_name="careless"),
            value(samples, "batchd_handler_metrics_invalid_total", api_name="careless"),
            value(samples, "batchd_handler_fine", api_name="careless"),
        )

    # 5000 series: the worker holds 1000 between reports and drops the rest; the 1001st
    # series of the API ("fine") is dropped by the daemon.
    wait_for(lambda: observed() == (1000, 4001.0, 4.0, None), timeout=10, what=f"{observed()}")
