"""tests/promql.py: the metric names, selectors and groupings read from PromQL."""

from __future__ import annotations

import pytest

from tests import promql


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            "histogram_quantile(0.95, sum by (le, api) (rate(batchd_batch_duration_seconds_bucket"
            '{instance=~"$instance", api=~"$api"}[$__rate_interval])))',
            {"batchd_batch_duration_seconds_bucket"},
        ),
        (
            "sum by (instance, api) (batchd_queue_depth) > 0\nunless on (instance, api)\n"
            "sum by (instance, api) (rate(batchd_batches_succeeded_total[30m])) > 0",
            {"batchd_queue_depth", "batchd_batches_succeeded_total"},
        ),
        (
            'batchd_jobs{status=~"a|b"} - batchd_jobs{status=~"a|b"} offset 15m > 0',
            {"batchd_jobs"},
        ),
        (
            "predict_linear(avail_bytes[1h], 4 * 3600) < 0 and avail_bytes / size_bytes < 0.25",
            {"avail_bytes", "size_bytes"},
        ),
        ("sum(a) without (le) / on (instance) group_left (api) b * 1e3", {"a", "b"}),
        ('up{job="batchd"} == 0', {"up"}),
        ("min (x) by (job)", {"x"}),
        ('sum by (api_name) (rate(${handler_counter}{api_name=~"$api"}[5m]))', set()),
        ('histogram_quantile(0.5, rate(${handler_histogram}_bucket{a="by (x) rate"}[5m]))', set()),
        ('label_values({__name__=~"a_.+", job="sum(b)"}, __name__)', set()),
    ],
)
def test_reading_promql_finds_the_metric_names(expr: str, names: set[str]) -> None:
    query = promql.label_values(expr)
    assert promql.read(query[0] if query is not None else expr).names == names


def test_reading_promql_finds_name_matchers_selectors_and_groupings() -> None:
    read = promql.read(
        '{__name__=~"a_.+_total", __name__!~"a_(b|c)_total", job="x"} + on (job) group_left (le)'
        ' sum without (z) (b{y="}", x=~"$api"}[$__rate_interval])'
    )
    assert read.names == {"b"}
    assert read.name_matchers == [[("=~", "a_.+_total"), ("!~", "a_(b|c)_total")]]
    assert read.selectors == [("b", {"y", "x"})]
    assert read.groupings == [{"job"}, {"le"}, {"z"}]
    assert promql.selects(read.name_matchers[0], "a_d_total")
    assert not promql.selects(read.name_matchers[0], "a_b_total")
    assert not promql.selects(read.name_matchers[0], "a_d")
