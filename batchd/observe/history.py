"""Recent throughput per API, kept in memory: batches succeeded and failed attempts per
second over the last hour and per minute over the last day.

Fed where outcomes are counted for /metrics (one call per report of successes, one per
failed attempt: a few list writes, no query), read by ``GET /history``. It is this
daemon's own (on a shared PostgreSQL queue, each node counts what its workers did) and
starts empty with the daemon; a job's whole history is read from the store instead
(``ReadStore.job_history``)."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    name: str
    step: int  # seconds per bucket
    size: int  # buckets kept

    def start(self, now: float) -> int:
        """The start (Unix seconds) of the window's first bucket, its last holding `now`."""
        return (int(now) // self.step - self.size + 1) * self.step


WINDOWS = {window.name: window for window in (Window("1h", 1, 3600), Window("1d", 60, 1440))}


class Ring:
    """Counts per bucket of `step` seconds, the last `size` buckets: a bucket is found by
    its number modulo `size` and cleared when a later bucket takes its place."""

    __slots__ = ("failed", "size", "stamps", "step", "succeeded", "window")

    def __init__(self, window: Window) -> None:
        self.window = window
        self.step, self.size = window.step, window.size
        self.stamps = [-1] * window.size
        self.succeeded = [0] * window.size
        self.failed = [0] * window.size

    def add(self, now: float, succeeded: int, failed: int) -> None:
        bucket = int(now) // self.step
        index = bucket % self.size
        if self.stamps[index] != bucket:
            self.stamps[index] = bucket
            self.succeeded[index] = self.failed[index] = 0
        self.succeeded[index] += succeeded
        self.failed[index] += failed

    def series(self, now: float) -> tuple[int, list[int], list[int]]:
        """(start of the first bucket, Unix seconds; succeeded; failed), oldest first,
        ending with the bucket that holds `now`."""
        last = int(now) // self.step
        succeeded, failed = [], []
        for bucket in range(last - self.size + 1, last + 1):
            index = bucket % self.size
            fresh = self.stamps[index] == bucket
            succeeded.append(self.succeeded[index] if fresh else 0)
            failed.append(self.failed[index] if fresh else 0)
        return self.window.start(now), succeeded, failed


class History:
    """A ring per API and window."""

    def __init__(self) -> None:
        self._apis: dict[str, tuple[Ring, ...]] = {}

    def record(self, api: str, succeeded: int, failed: int) -> None:
        rings = self._apis.get(api)
        if rings is None:
            rings = self._apis[api] = tuple(Ring(window) for window in WINDOWS.values())
        now = time.time()
        for ring in rings:
            ring.add(now, succeeded, failed)

    def series(
        self, api: str, window: Window, now: float | None = None
    ) -> tuple[int, list[int], list[int]]:
        """The API's series over `window` (zeros for an API that did nothing here)."""
        now = time.time() if now is None else now
        rings = self._apis.get(api)
        ring = rings[list(WINDOWS).index(window.name)] if rings else Ring(window)
        return ring.series(now)
