"""Handler metrics on the channel: names, buckets and the payload (standard library only).

A worker's ``metrics_client`` (batchd.worker.metrics_client) merges what the handler
records and sends it with the next report or ``completed`` as their ``metrics`` field;
the daemon (batchd.observe.handler_metrics) reads it with :func:`read_metrics`:

    {"series": [[kind, name, tags, value], ...], "dropped"?: int, "invalid"?: int}

    kind  "c" (increment: value is the sum since the last report), "g" (gauge: the last
          value), "h" (histogram: value is [count, sum, [count per bucket of BUCKETS,
          then +Inf]], not cumulative)
    name  a Prometheus name without the prefix, already sanitised (metric_name)
    tags  [[key, value], ...] sorted by key; keys are label names (label_name), at most
          MAX_TAGS, values UTF-8 text of MAX_TAG_VALUE_LENGTH characters at most
    dropped   recordings the worker dropped: over SERIES_MAX series since its last report
    invalid   recordings the worker refused: a name, tag or value it could not use
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from batchd.wire.framing import BadFrame

# Series an API may have on one daemon, and a worker may hold between two reports.
SERIES_MAX = 1000
# What the prometheus statsd exporter gave Cortex's histograms: Prometheus's defaults.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
# Label names the daemon sets or Prometheus reserves.
RESERVED_LABELS = frozenset({"api_name", "le", "quantile", "job", "instance"})
MAX_NAME_LENGTH = 200
MAX_TAG_VALUE_LENGTH = 1000
# Tags one recording may have (what a daemon keeps per series stays bounded).
MAX_TAGS = 32
# A count on the wire (dropped, invalid, a histogram's): what a float holds exactly.
MAX_COUNT = 2**53
KINDS = frozenset({"c", "g", "h"})

_NOT_NAME = re.compile(r"[^A-Za-z0-9_]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def metric_name(raw: object) -> str | None:
    """`raw` as a Prometheus name (Cortex's statsd exporter also turned ``.`` and ``-``
    into ``_``), or None when it cannot be one."""
    if type(raw) is not str or not raw or len(raw) > MAX_NAME_LENGTH:
        return None
    name = _NOT_NAME.sub("_", raw)
    if name[0].isdigit():
        # One character more: the daemon takes no name over MAX_NAME_LENGTH either.
        name = f"_{name}"
    return name if len(name) <= MAX_NAME_LENGTH else None


def label_name(raw: object) -> str | None:
    """A tag key as a label name, or None (reserved, or ``__``-prefixed as Prometheus's own)."""
    name = metric_name(raw)
    if name is None or name.startswith("__") or name in RESERVED_LABELS:
        return None
    return name


class Recorded(NamedTuple):
    """One series' values from one report, checked."""

    kind: str
    name: str
    tags: tuple[tuple[str, str], ...]
    # c and g: the number; h: (count, sum, counts per bucket then +Inf)
    value: float | tuple[int, float, list[int]]


class WorkerMetrics(NamedTuple):
    series: list[Recorded]
    dropped: int
    invalid: int


def read_metrics(payload: Mapping[str, Any]) -> WorkerMetrics:
    """A report's ``metrics``, checked: BadFrame for anything the worker's client would not
    have sent (a handler can write to the channel)."""
    series = payload.get("series", [])
    dropped, invalid = payload.get("dropped", 0), payload.get("invalid", 0)
    if type(series) is not list or not _is_count(dropped) or not _is_count(invalid):
        raise BadFrame("metrics without a list of series and counts (ints, 0 or more)")
    return WorkerMetrics([_recorded(entry) for entry in series], dropped, invalid)


def _recorded(entry: Any) -> Recorded:
    if type(entry) is not list or len(entry) != 4:
        raise BadFrame(f"a metric sent as {_shown(entry)}")
    kind, name, tags, value = entry
    if kind not in KINDS or type(name) is not str or not _is_name(name):
        raise BadFrame(f"a metric sent as {_shown(entry)}")
    if type(tags) is not list or len(tags) > MAX_TAGS or not all(_is_tag(tag) for tag in tags):
        raise BadFrame(f"a metric with tags {_shown(tags)}")
    pairs = tuple((key, item) for key, item in tags)
    if kind != "h":
        if not is_number(value) or (kind == "c" and value < 0):
            raise BadFrame(f"a metric value {_shown(value)}")
        return Recorded(kind, name, pairs, float(value))
    if not (
        type(value) is list
        and len(value) == 3
        and _is_count(value[0])
        and is_number(value[1])
        and type(value[2]) is list
        and len(value[2]) == len(BUCKETS) + 1
        and all(_is_count(count) for count in value[2])
    ):
        raise BadFrame(f"a histogram value {_shown(value)}")
    return Recorded(kind, name, pairs, (value[0], float(value[1]), value[2]))


def _is_name(name: str) -> bool:
    return len(name) <= MAX_NAME_LENGTH and _NAME.fullmatch(name) is not None


def _is_tag(tag: Any) -> bool:
    return (
        type(tag) is list
        and len(tag) == 2
        and type(tag[0]) is str
        and type(tag[1]) is str
        and label_name(tag[0]) == tag[0]
        and len(tag[1]) <= MAX_TAG_VALUE_LENGTH
        and _is_utf8(tag[1])
    )


def _is_utf8(text: str) -> bool:
    """JSON can carry a lone surrogate (``"\\ud800"``); the exposition, UTF-8, cannot."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_count(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_COUNT


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool): what a metric's value may be."""
    try:
        return type(value) in (int, float) and math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."
