"""``metrics_client``: what a Handler records, as Cortex's (standard library only).

Cortex passed a ``MetricsClient`` to ``Handler.__init__`` when it declared one, and sent
each call to a statsd exporter over UDP: nothing it did could fail the handler. Here the
calls are merged in the worker (a counter's increments summed, a gauge's last value, a
histogram's bucket counts) and go to the daemon with the next report or ``completed``
(batchd.wire.metrics), which exposes them on ``/metrics``. A handler that records
nothing costs nothing: the report carries no ``metrics`` at all.

Nothing here raises into the handler: a name, tag or value it cannot use is dropped and
counted (logged the first time), and past SERIES_MAX series between two reports further
new series are dropped and counted, so memory stays bounded.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping
from typing import Any

from batchd.wire.metrics import (
    BUCKETS,
    MAX_TAG_VALUE_LENGTH,
    MAX_TAGS,
    SERIES_MAX,
    is_number,
    label_name,
    metric_name,
)
from batchd.worker.log import logger

Tags = tuple[tuple[str, str], ...]
_Key = tuple[str, str, Tags]


class MetricsClient:
    """``increment``, ``gauge`` and ``histogram``, with Cortex's arguments."""

    def __init__(self, series_max: int = SERIES_MAX) -> None:
        self._series_max = series_max
        # (kind, name, tags) -> the sum (c), the last value (g), [count, sum, counts] (h)
        self._pending: dict[_Key, Any] = {}
        self._dropped = 0
        self._invalid = 0
        self._warned = False
        # Raw metric name (tag key) -> sanitised (None: unusable); bounded like the series.
        self._names: dict[object, str | None] = {}
        self._labels: dict[object, str | None] = {}

    def increment(
        self, metric: str, value: float = 1, tags: Mapping[str, str] | None = None
    ) -> None:
        """Add `value` (0 or more) to the counter `metric`."""
        key = self._key("c", metric, value, tags)
        if key is None:
            return
        if value < 0:
            self._refuse(f"a negative increment ({value!r}): a counter only goes up", metric)
            return
        total = self._pending.get(key, 0) + value
        if not is_number(total):
            self._refuse("an increment that would make the sum infinite", metric)
            return
        self._pending[key] = total

    def gauge(self, metric: str, value: float, tags: Mapping[str, str] | None = None) -> None:
        """Set the gauge `metric` to `value`."""
        key = self._key("g", metric, value, tags)
        if key is not None:
            self._pending[key] = value

    def histogram(self, metric: str, value: float, tags: Mapping[str, str] | None = None) -> None:
        """Observe `value` in the histogram `metric` (Prometheus's default buckets)."""
        key = self._key("h", metric, value, tags)
        if key is None:
            return
        observed = self._pending.get(key)
        if observed is not None and not is_number(observed[1] + value):
            self._refuse("an observation that would make the sum infinite", metric)
            return
        if observed is None:
            observed = self._pending[key] = [0, 0.0, [0] * (len(BUCKETS) + 1)]
        observed[0] += 1
        observed[1] += value
        # bisect_left: a value equal to a bound is in that bucket (le is <=).
        observed[2][bisect.bisect_left(BUCKETS, value)] += 1

    def take(self) -> dict[str, Any] | None:
        """What was recorded since the last take, as a report's ``metrics`` (None: nothing)."""
        if not (self._pending or self._dropped or self._invalid):
            return None
        # Swapped out first, and its items listed at once (atomic under the GIL): a thread
        # of the handler may be recording meanwhile.
        pending, self._pending = self._pending, {}
        taken: dict[str, Any] = {
            "series": [
                [kind, name, [list(tag) for tag in tags], value]
                for (kind, name, tags), value in list(pending.items())
            ]
        }
        dropped, invalid, self._dropped, self._invalid = self._dropped, self._invalid, 0, 0
        if dropped:
            taken["dropped"] = dropped
        if invalid:
            taken["invalid"] = invalid
        return taken

    def _key(
        self, kind: str, metric: object, value: object, tags: Mapping[str, str] | None
    ) -> _Key | None:
        """The series of a recording, or None when it was dropped (and counted)."""
        try:
            name = self._name(metric)
            if name is None:
                self._refuse("a metric name that cannot be a Prometheus name", metric)
                return None
            if not is_number(value):
                self._refuse(f"a value that is not a finite number ({_shown(value)})", metric)
                return None
            key = (kind, name, self._tags(tags) if tags else ())
        except Exception as exc:  # whatever a strange tags object raises
            self._refuse(f"tags it cannot use ({type(exc).__name__}: {exc})", metric)
            return None
        if key not in self._pending and len(self._pending) >= self._series_max:
            self._dropped += 1
            return None
        return key

    def _name(self, metric: object) -> str | None:
        return self._sanitised(metric, metric_name)

    def _sanitised(self, raw: object, sanitise: Callable[[object], str | None]) -> str | None:
        """`sanitise(raw)`, remembered: handlers use a few names over and over."""
        cache = self._names if sanitise is metric_name else self._labels
        try:
            return cache[raw]
        except KeyError:
            name = sanitise(raw)
            if len(cache) < self._series_max:
                cache[raw] = name
            return name
        except TypeError:  # unhashable
            return None

    def _tags(self, tags: Mapping[str, str]) -> Tags:
        if len(tags) > MAX_TAGS:
            raise ValueError(f"over {MAX_TAGS} tags")
        pairs = []
        for raw_key, raw_value in tags.items():
            key = self._sanitised(raw_key, label_name)
            if key is None:
                raise ValueError(f"{raw_key!r} cannot be a label name")
            value = raw_value if type(raw_value) is str else str(raw_value)
            if len(value) > MAX_TAG_VALUE_LENGTH:
                raise ValueError(
                    f"the value of {raw_key!r} is over {MAX_TAG_VALUE_LENGTH} characters"
                )
            # What UTF-8 cannot carry, the channel cannot either.
            value.encode("utf-8")
            pairs.append((key, value))
        if len(pairs) > 1:
            pairs.sort()
            if len({key for key, _ in pairs}) != len(pairs):
                raise ValueError("two keys name the same label")
        return tuple(pairs)

    def _refuse(self, why: str, metric: object) -> None:
        self._invalid += 1
        if not self._warned:
            self._warned = True
            logger.warning(
                f"metrics_client dropped a recording of {_shown(metric)}: {why}; further "
                "ones are counted in batchd_handler_metrics_invalid_total, not logged"
            )


def _shown(value: object) -> str:
    try:
        text = repr(value)
    except Exception:
        return f"a {type(value).__name__}"
    return text if len(text) <= 80 else f"{text[:77]}..."
