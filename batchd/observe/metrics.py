"""Prometheus metrics: one registry per daemon, served at ``GET /metrics``.

Counters and histograms are fed by events (the scheduler records outcomes and worker
deaths, the job routes admissions, the store its commits). What describes the current
state (jobs by status, queue depth, workers) is read at scrape time by a collector, from
a snapshot of the scheduler (observe/snapshot.py) and one store query, so it can never
drift from the truth.

Labels are bounded: an API name, a job status, a batch state, a worker state or a GPU
index; never a job or batch id.
"""

from __future__ import annotations

import bisect
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from batchd.constants import VERSION
from batchd.observe.handler_metrics import HandlerMetrics
from batchd.observe.history import History
from batchd.observe.snapshot import SchedulerSnapshot
from batchd.statuses import REACHABLE_STATUSES

if TYPE_CHECKING:
    from batchd.store.records import BatchState, MetricCounts, Success
    from batchd.store.roles import Store

# The classic text format (what Prometheus 2 and 3 both scrape).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# No `_created` series next to every counter and histogram: they double the output and
# no query here needs them.
disable_created_metrics()  # type: ignore[no-untyped-call]

BATCH_DURATION_BUCKETS = (
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip
ADMISSION_BUCKETS = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
)  # fmt: skip
COMMIT_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
)  # fmt: skip

WORKER_STATES = ("initializing", "running", "stopping")


class BulkHistogram:
    """A labelled histogram fed a whole report of values at once.

    Successes arrive up to 1024 per report at tens of thousands a second; counting them
    into buckets here costs a fifth of what ``Histogram.observe`` does per value. It is
    exposed through prometheus_client's ``HistogramMetricFamily``."""

    def __init__(self, name: str, documentation: str, label: str, buckets: Sequence[float]):
        self.name = name
        self.documentation = documentation
        self.label = label
        self._bounds = list(buckets)
        self._names = [*(repr(float(b)) for b in buckets), "+Inf"]
        # label value -> (count per bucket, the last being +Inf; [sum])
        self._series: dict[str, tuple[list[int], list[float]]] = {}

    def observe_many(self, label: str, values: Iterable[float]) -> None:
        series = self._series.get(label)
        if series is None:
            series = self._series[label] = ([0] * (len(self._bounds) + 1), [0.0])
        counts, total = series
        bounds, where = self._bounds, bisect.bisect_left
        subtotal = 0.0
        for value in values:
            # bisect_left: a value equal to a bound belongs to that bucket (le is <=).
            counts[where(bounds, value)] += 1
            subtotal += value
        total[0] += subtotal

    def snapshot(self) -> tuple[list[float], dict[str, tuple[list[int], float]]]:
        """(bucket upper bounds, {label: (count per bucket, +Inf last; sum)}): not
        cumulative, as a chart draws them."""
        return list(self._bounds), {
            label: (list(counts), total[0]) for label, (counts, total) in self._series.items()
        }

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=[self.label])
        for label, (counts, total) in sorted(self._series.items()):
            cumulative, buckets = 0, []
            for bucket, count in zip(self._names, counts, strict=True):
                cumulative += count
                buckets.append((bucket, float(cumulative)))
            family.add_metric([label], buckets, total[0])
        yield family


@dataclass
class _ApiSeries:
    """The children of every per-API counter for one API, looked up once."""

    succeeded: Counter
    failed: Counter
    dead_lettered: Counter
    redelivered: Counter
    lease_expiries: Counter
    restarts: Counter
    oom_kills: Counter


@dataclass
class _Snapshot:
    """What the scrape read from the store just before rendering."""

    jobs_by_status: dict[str, int] = field(default_factory=dict)
    queued_by_api: dict[str, int] = field(default_factory=dict)
    leased_by_api: dict[str, int] = field(default_factory=dict)


class Metrics:
    """The daemon's metrics and the calls that feed them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry

        def per_api(name: str, documentation: str) -> Counter:
            return Counter(name, documentation, ["api"], registry=registry)

        self._succeeded = per_api("batchd_batches_succeeded", "Batches that succeeded.")
        self._failed = per_api(
            "batchd_batches_failed",
            "Failed batch attempts (the handler raised, its worker died, or its lease "
            "expired); each is either redelivered or dead-lettered.",
        )
        self._dead_lettered = per_api(
            "batchd_batches_dead_lettered",
            "Batches dead-lettered: their last allowed attempt failed.",
        )
        self._redelivered = per_api(
            "batchd_batches_redelivered",
            "Batches queued again after a failed attempt, to be delivered once more.",
        )
        self._lease_expiries = per_api(
            "batchd_lease_expiries",
            "Leases that expired (their worker was lost), including those held when the "
            "previous daemon stopped, counted at startup.",
        )
        self._restarts = per_api(
            "batchd_worker_restarts",
            "Workers that died unexpectedly (crash, kill, out of memory, batch time limit); "
            "a new worker replaces each unless the job fails.",
        )
        self._oom_kills = per_api(
            "batchd_worker_oom_kills",
            "Workers that died out of memory (OOM killer, memory cgroup, MemoryError).",
        )
        self._log_lines_dropped = per_api(
            "batchd_job_log_lines_dropped",
            "Job log records that could not be stored (the disk is full, or the record "
            "cannot be written); the worker's output is still read on.",
        )
        self._admission = Histogram(
            "batchd_admission_seconds",
            "Job admission: from the submit (or retry) request until the job and all its "
            "batches are stored.",
            ["api"],
            buckets=ADMISSION_BUCKETS,
            registry=registry,
        )
        self._commit = Histogram(
            "batchd_sqlite_commit_seconds",
            "Time of each SQLite COMMIT (with synchronous=FULL, the fsync).",
            buckets=COMMIT_BUCKETS,
            registry=registry,
        )
        self.batch_duration = BulkHistogram(
            "batchd_batch_duration_seconds",
            "handle_batch time of succeeded batches, as the worker measured it.",
            "api",
            BATCH_DURATION_BUCKETS,
        )
        registry.register(self.batch_duration)
        self._state = StateCollector()
        registry.register(self._state)
        self._handler = HandlerMetrics(registry)
        ProcessCollector(registry=registry)
        self._apis: dict[str, _ApiSeries] = {}
        # Not exported: the dashboard's recent throughput (GET /history).
        self.history = History()

    def _api(self, api: str) -> _ApiSeries:
        series = self._apis.get(api)
        if series is None:
            series = self._apis[api] = _ApiSeries(
                succeeded=self._succeeded.labels(api),
                failed=self._failed.labels(api),
                dead_lettered=self._dead_lettered.labels(api),
                redelivered=self._redelivered.labels(api),
                lease_expiries=self._lease_expiries.labels(api),
                restarts=self._restarts.labels(api),
                oom_kills=self._oom_kills.labels(api),
            )
        return series

    # -- events ------------------------------------------------------------------------

    def batches_succeeded(self, api: str, successes: Sequence[Success], accepted: int) -> None:
        """A report's successes, `accepted` of them stored (the rest had stale leases)."""
        self._api(api).succeeded.inc(accepted)
        self.history.record(api, accepted, 0)
        if accepted < len(successes):
            successes = successes[:accepted]
        self.batch_duration.observe_many(api, [success.duration for success in successes])

    def batch_failed(self, api: str, state: BatchState | str | None) -> None:
        """A failed attempt and the batch's new state (None: its lease was stale)."""
        if state is None:
            return
        series = self._api(api)
        series.failed.inc()
        self.history.record(api, 0, 1)
        if state == "dead":
            series.dead_lettered.inc()
        else:
            series.redelivered.inc()

    def leases_expired(
        self, expired: Iterable[tuple[str, int, BatchState]], api_of: Callable[[str], str]
    ) -> None:
        """Expired leases as the store reports them: (job id, seq, the batch's new state)."""
        for job_id, _, state in expired:
            api = api_of(job_id)
            self._api(api).lease_expiries.inc()
            self.batch_failed(api, state)

    def worker_died(self, api: str, oom: bool) -> None:
        series = self._api(api)
        series.restarts.inc()
        if oom:
            series.oom_kills.inc()

    def handler_recorded(self, api: str, metrics: dict[str, Any]) -> None:
        """What a worker's handler recorded with metrics_client (a report's ``metrics``);
        BadFrame when the worker could not have sent it."""
        self._handler.record(api, metrics)

    def log_line_dropped(self, api: str) -> None:
        self._log_lines_dropped.labels(api).inc()

    def admitted(self, api: str, started: float) -> None:
        """A job was stored; `started` is the ``time.perf_counter()`` of its request."""
        self._admission.labels(api).observe(time.perf_counter() - started)

    def observe_commit(self, seconds: float) -> None:
        """The store's on_commit hook: how long a COMMIT took."""
        self._commit.observe(seconds)

    # -- scrape ------------------------------------------------------------------------

    async def exposition(
        self,
        store: Store,
        scheduler_snapshot: Callable[[], SchedulerSnapshot],
        state_dir: Path | None = None,
    ) -> bytes:
        """The text exposition: current state read now, then every metric rendered."""
        counts = await store.metric_counts()
        # No await between taking the snapshot and rendering it: scrapes cannot interleave.
        self._state.update(counts, scheduler_snapshot(), _filesystem(state_dir))
        return generate_latest(self.registry)


class StateCollector(Collector):
    """Gauges of the current state, computed at scrape time."""

    def __init__(self) -> None:
        self._counts: MetricCounts | None = None
        self._scheduler: SchedulerSnapshot | None = None
        self._filesystem: tuple[int, int] | None = None

    def update(
        self,
        counts: MetricCounts,
        scheduler: SchedulerSnapshot,
        filesystem: tuple[int, int] | None = None,
    ) -> None:
        self._counts, self._scheduler, self._filesystem = counts, scheduler, filesystem

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("batchd_info", "The running batchd.", labels=["version"])
        info.add_metric([VERSION], 1.0)
        yield info
        counts, scheduler = self._counts, self._scheduler
        if counts is None or scheduler is None:
            return
        jobs = GaugeMetricFamily("batchd_jobs", "Jobs in the store by status.", labels=["status"])
        for status in (
            *REACHABLE_STATUSES,
            *sorted(set(counts.jobs_by_status) - set(REACHABLE_STATUSES)),
        ):
            jobs.add_metric([status], float(counts.jobs_by_status.get(status, 0)))
        yield jobs
        depth = GaugeMetricFamily(
            "batchd_queue_depth",
            "Batches of unfinished jobs waiting for a worker (queued) or out with one (leased).",
            labels=["api", "state"],
        )
        for api in sorted({*counts.queued_by_api, *counts.leased_by_api}):
            depth.add_metric([api, "queued"], float(counts.queued_by_api.get(api, 0)))
            depth.add_metric([api, "leased"], float(counts.leased_by_api.get(api, 0)))
        yield depth
        yield from _worker_families(scheduler)
        if self._filesystem is not None:
            yield from _filesystem_families(*self._filesystem)


def _filesystem(state_dir: Path | None) -> tuple[int, int] | None:
    """(bytes available to the daemon, size) of the state dir's filesystem: one statvfs,
    so a box without node_exporter can still alert on a filling disk."""
    if state_dir is None:
        return None
    try:
        stat = os.statvfs(state_dir)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize, stat.f_blocks * stat.f_frsize


def _filesystem_families(available: int, size: int) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "batchd_state_filesystem_avail_bytes",
        "Bytes free for the daemon (not root's reserve) on the state dir's filesystem.",
        value=available,
    )
    yield GaugeMetricFamily(
        "batchd_state_filesystem_size_bytes",
        "Size of the state dir's filesystem in bytes.",
        value=size,
    )


def _worker_families(scheduler: SchedulerSnapshot) -> Iterator[Metric]:
    by_state: dict[tuple[str, str], int] = {}
    by_gpu = dict.fromkeys(scheduler.gpus, 0)
    for worker in scheduler.workers:
        if worker.state in WORKER_STATES:
            key = (worker.api_name, worker.state)
            by_state[key] = by_state.get(key, 0) + 1
        for gpu in worker.gpus:
            by_gpu[gpu] = by_gpu.get(gpu, 0) + 1
    workers = GaugeMetricFamily(
        "batchd_workers", "Live worker processes by API and state.", labels=["api", "state"]
    )
    for api in sorted({api for api, _ in by_state}):
        for state in WORKER_STATES:
            workers.add_metric([api, state], float(by_state.get((api, state), 0)))
    yield workers
    gpus = GaugeMetricFamily(
        "batchd_gpu_workers", "Workers holding each GPU (0: the GPU is free).", labels=["gpu"]
    )
    for gpu in sorted(by_gpu):
        gpus.add_metric([str(gpu)], float(by_gpu[gpu]))
    yield gpus
    yield GaugeMetricFamily(
        "batchd_max_workers", "Worker slots (max_workers).", value=scheduler.max_workers
    )
