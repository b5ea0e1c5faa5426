"""Reading PromQL well enough to check it against a scrape: which metric names an
expression uses, with which labels, for tests/test_contrib.py.

Not a parser: regular expressions over what Grafana dashboards and alert rules write.
Grafana's variables ($api, ${name}_bucket) are dropped with any name text glued to them;
label names go with the matchers, the `by (...)` lists and the ranges they sit in; what
is left is a metric name unless it is a function (followed by a parenthesis) or a PromQL
word.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.metrics_core import Metric

# PromQL's keywords and aggregation operators: identifiers that are not metric names
# (an aggregation may stand before `by (...)`, away from its parenthesis).
WORDS = frozenset(
    {
        *("and", "or", "unless", "by", "without", "on", "ignoring", "group_left"),
        *("group_right", "bool", "offset", "atan2", "inf", "nan"),
        *("sum", "min", "max", "avg", "group", "stddev", "stdvar", "count"),
        *("count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio"),
    }
)
GRAFANA_VARIABLE = re.compile(r"\$\{?\w+\}?[\w:]*")  # with a name suffix: ${var}_bucket
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
# Label matchers in braces; a brace may stand inside a quoted value.
_BRACES = r'\{(?:[^{}"]|"(?:[^"\\]|\\.)*")*\}'
_SELECTOR = re.compile(_BRACES)
_NAMED_SELECTOR = re.compile(rf"(?<![\w:])([A-Za-z_:][\w:]*)\s*({_BRACES})")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENTIFIER = re.compile(r"(?<![\w.:])[A-Za-z_:][\w:]*(?![\w:])(?!\s*\()")
_LABEL_VALUES = re.compile(r"\s*label_values\((?P<selector>.*),\s*(?P<label>\w+)\s*\)\s*", re.S)


@dataclass
class PromQL:
    """What one expression reads: metric names; the `__name__` matchers (operator, value)
    of each selector that names its metrics by matchers; each named selector's metric and
    the labels it matches on; and the label lists of its groupings (by, on, without...)."""

    names: set[str]
    name_matchers: list[list[tuple[str, str]]]
    selectors: list[tuple[str, set[str]]]
    groupings: list[set[str]]


def read(expr: str) -> PromQL:
    expr = GRAFANA_VARIABLE.sub("", expr)
    name_matchers = []
    for selector in _SELECTOR.findall(expr):
        found = [
            (op, value) for label, op, value in _MATCHER.findall(selector) if label == "__name__"
        ]
        if found:
            name_matchers.append(found)
    selectors = [
        (name, {label for label, _, _ in _MATCHER.findall(matchers)})
        for name, matchers in _NAMED_SELECTOR.findall(expr)
    ]
    bare = _SELECTOR.sub(" ", _STRING.sub('""', expr))
    groupings = [
        {label.strip() for label in listed.split(",")} - {""} for listed in _GROUPING.findall(bare)
    ]
    bare = _GROUPING.sub(" ", _RANGE.sub(" ", bare))
    names = {name for name in _IDENTIFIER.findall(bare) if name not in WORDS}
    return PromQL(names, name_matchers, selectors, groupings)


def selects(matchers: list[tuple[str, str]], name: str) -> bool:
    """Whether a series called `name` passes every `__name__` matcher of one selector."""
    for operator, value in matchers:
        passed = {
            "=": name == value,
            "!=": name != value,
            "=~": re.fullmatch(value, name) is not None,
            "!~": re.fullmatch(value, name) is None,
        }[operator]
        if not passed:
            return False
    return True


def label_values(query: str) -> tuple[str, str] | None:
    """The series selector and the label of a Grafana `label_values(selector, label)`."""
    match = _LABEL_VALUES.fullmatch(query)
    return (match["selector"], match["label"]) if match else None


def series_names(families: Iterable[Metric]) -> set[str]:
    """The series names scrapes give Prometheus: every family's, even one without samples
    yet (a per-API counter before the first event), suffixes included."""
    names = set()
    for family in families:
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_sum", "_count"),
            "summary": ("", "_sum", "_count"),
        }.get(family.type, ("",))
        names |= {family.name + suffix for suffix in suffixes}
        names |= {sample.name for sample in family.samples}
    return names
