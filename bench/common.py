"""What every workload shares: sizes, figures, a daemon of its own, process probes.

The bench talks to batchd only through its HTTP API (:mod:`batchd.client`) and runs the
daemon as ``python -m batchd serve`` with this checkout first on ``PYTHONPATH``, so it
measures whatever batchd is in the tree it lives in, at any commit.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from batchd.client import TERMINAL_STATUSES, Client
from testkit import launcher

REPO = Path(__file__).resolve().parent.parent
PROJECTS = Path(__file__).resolve().parent / "projects"
WORKERS = 2
_STARTED = time.monotonic()


# -- sizes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """Workload sizes: the full ones (``make bench``) by default, tiny ones for --quick."""

    w1_items: int = 100_000
    w1_100_items: int = 100_000
    w2_items: int = 20_000
    w2_batch_size: int = 32
    w2_ms_per_item: float = 5.0
    admission_items: int = 1_000_000
    latency_jobs: int = 50
    memory_small: int = 10_000
    memory_large: int = 1_000_000
    # A delimited_files input of this many 1 KiB lines (1 GiB).
    memory_input_lines: int = 1024 * 1024
    status_clients: int = 8
    # A drain still running after this long is stopped and its rate taken from the
    # batches done so far (the report says so); keeps `make bench` bounded on a slow daemon.
    drain_cap_s: float = 60.0
    # Status-under-load measures at most this long of a W1 drain.
    status_window_s: float = 20.0
    limit_w2_items: int = 200
    # The scale section (PostgreSQL): procrastinate's tasks (it drains ~100/s on a disk
    # whose fsync takes ms), the driver comparison's batches, W3's seconds of work.
    peer_tasks: int = 2_000
    driver_batches: int = 100_000
    w3_seconds: float = 20.0
    # W4: batches of 64 rows through an ONNX MLP (about 40 ms of one core each).
    w4_batches: int = 600


FULL = Sizes()
QUICK = Sizes(
    w1_items=2_000,
    w1_100_items=5_000,
    w2_items=320,
    admission_items=20_000,
    latency_jobs=5,
    memory_small=1_000,
    memory_large=20_000,
    memory_input_lines=16 * 1024,
    drain_cap_s=30.0,
    status_window_s=3.0,
    limit_w2_items=32,
    peer_tasks=200,
    driver_batches=5_000,
    w3_seconds=2.0,
    w4_batches=40,
)


# -- figures -----------------------------------------------------------------------------


@dataclass
class Metric:
    """One figure, measured once per run."""

    name: str
    unit: str
    values: list[float] = field(default_factory=list)
    # Digits after the point in the report.
    digits: int = 0

    @property
    def median(self) -> float:
        return float(statistics.median(self.values)) if self.values else math.nan

    @property
    def low(self) -> float:
        return min(self.values) if self.values else math.nan

    @property
    def high(self) -> float:
        return max(self.values) if self.values else math.nan


@dataclass
class Target:
    """A figure computed from medians (mostly a ratio) and its pass bar: `value` against
    `bound`, `op` one of ">=" and "<="; no bound: reported only."""

    name: str
    value: float
    op: str = ""
    bound: float | None = None
    unit: str = ""
    digits: int = 2

    @property
    def met(self) -> bool | None:
        if self.bound is None or math.isnan(self.value):
            return None
        return self.value >= self.bound if self.op == ">=" else self.value <= self.bound


@dataclass
class Result:
    """One workload's figures, pass bars and notes."""

    key: str
    title: str
    what: str
    metrics: dict[str, Metric] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    # The report's section (## heading) the workload goes under.
    section: str = "Workloads"

    def metric(self, name: str, unit: str, digits: int = 0) -> Metric:
        if name not in self.metrics:
            self.metrics[name] = Metric(name, unit, digits=digits)
        return self.metrics[name]

    def add(self, name: str, unit: str, value: float, digits: int = 0) -> None:
        self.metric(name, unit, digits).values.append(float(value))

    def median(self, name: str) -> float:
        metric = self.metrics.get(name)
        return metric.median if metric else math.nan

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


@dataclass
class Context:
    sizes: Sizes
    runs: int
    quick: bool
    huey: bool
    workdir: Path
    # Figures one workload leaves for a later one (W1's "full" rates for the sync one).
    cache: dict[str, Any] = field(default_factory=dict)


def progress(message: str) -> None:
    """One line on stderr, prefixed with the time since the bench started."""
    elapsed = time.monotonic() - _STARTED
    print(f"[{elapsed:7.1f}s] {message}", file=sys.stderr, flush=True)


def ratio(numerator: float, denominator: float) -> float:
    if not denominator or math.isnan(denominator) or math.isnan(numerator):
        return math.nan
    return numerator / denominator


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (p99 of 50 values is the largest)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


# -- a daemon of its own -----------------------------------------------------------------


def parse_iso(value: str | None) -> float | None:
    """A job status time (``2026-11-28T00:35:34.152Z``) as Unix seconds."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Daemon(launcher.Daemon):
    """``batchd serve`` of the checkout at :data:`REPO`, in a temp state dir on a free
    port; everything it starts dies with :meth:`close` (its workers and anything they
    started included)."""

    def __init__(self, workdir: Path, name: str, **settings: Any) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=workdir))
        pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        super().__init__(
            state_dir=self.root / "state",
            config_path=self.root / "batchd.toml",
            config={"max_workers": WORKERS, "worker_stop_grace": 2.0, **settings},
            log_path=self.root / "daemon.log",
            env={"PYTHONPATH": pythonpath},
            cwd=self.root,
        )
        # One client for the whole run, made before any clock starts.
        self._client = Client(self.url, timeout=600)

    @property
    def client(self) -> Client:
        return self._client

    def ps(self) -> psutil.Process:
        return psutil.Process(self.pid)

    def deploy(self, project: str) -> str:
        api: dict[str, Any] = self.client.deploy(PROJECTS / project)
        return str(api["name"])

    def submit(self, api: str, body: bytes) -> dict[str, Any]:
        return self.client.submit(api, body)

    def status(self, api: str, job_id: str) -> dict[str, Any]:
        status: dict[str, Any] = self.client.get_job(api, job_id)["job_status"]
        return status

    def cpu_of_descendants(self) -> dict[int, float]:
        """CPU seconds so far of each live worker (and anything under it)."""
        found: dict[int, float] = {}
        for proc in self.descendants():
            with contextlib.suppress(psutil.Error):
                found[proc.pid] = cpu_seconds(proc.cpu_times())
        return found

    def wait_idle(self, timeout: float = 10.0, window: float = 0.1) -> bool:
        """Until the daemon and its processes are quiet: the same processes, and no CPU
        spent by them or by the daemon over `window` seconds. A daemon may keep processes
        between jobs (a spare worker, say), so quiet, not gone, is what idle means here.
        False when still busy after `timeout`."""
        deadline = time.monotonic() + timeout
        previous: tuple[float, dict[int, float]] | None = None
        while True:
            try:
                own = cpu_seconds(self.ps().cpu_times())
            except psutil.Error:
                return True
            snapshot = (own, self.cpu_of_descendants())
            if snapshot == previous:
                return True
            if time.monotonic() > deadline:
                return False
            previous = snapshot
            time.sleep(window)


def job_body(
    items: list[Any],
    batch_size: int,
    config: dict[str, Any] | None = None,
    workers: int = WORKERS,
) -> bytes:
    """A job's JSON body, encoded once, before any clock starts."""
    body: dict[str, Any] = {
        "workers": workers,
        "item_list": {"items": items, "batch_size": batch_size},
    }
    if config:
        body["config"] = config
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass
class Drain:
    """One job from submission to its end (or to the cap)."""

    total: int
    succeeded: int
    submitted_at: float
    admitted_at: float
    ended_at: float
    status: str
    capped: bool

    @property
    def rate(self) -> float:
        """Batches per second from submission to the end."""
        return ratio(self.succeeded, self.ended_at - self.submitted_at)

    @property
    def drain_rate(self) -> float:
        """Batches per second once admitted (from the 2xx to the end)."""
        return ratio(self.succeeded, self.ended_at - self.admitted_at)


def run_job(
    daemon: Daemon,
    api: str,
    body: bytes,
    cap_s: float,
    poll_s: float = 0.05,
) -> Drain:
    """Submit, then poll the job status until it ends or `cap_s` passes (then stop it).

    Completions are the store's own count (``batch_metrics.succeeded``); the end is the
    job's ``end_time`` when it ended, so the poll interval does not blur the figure.
    """
    submitted = time.time()
    spec = daemon.submit(api, body)
    admitted = time.time()
    job_id = str(spec["job_id"])
    total = int(spec["total_batch_count"])
    deadline = submitted + cap_s
    while True:
        status = daemon.status(api, job_id)
        if status["status"] in TERMINAL_STATUSES:
            end = parse_iso(status.get("end_time")) or time.time()
            return Drain(
                total,
                int(status["batch_metrics"]["succeeded"]),
                submitted,
                admitted,
                end,
                str(status["status"]),
                capped=False,
            )
        now = time.time()
        if now >= deadline:
            done = int(status["batch_metrics"]["succeeded"])
            with contextlib.suppress(Exception):
                daemon.client.stop_job(api, job_id)
            return Drain(total, done, submitted, admitted, now, "capped", capped=True)
        time.sleep(poll_s)


# -- the Handler in a plain loop ---------------------------------------------------------


def load_handler(project: str, config: dict[str, Any] | None = None) -> Any:
    """An instance of the project's Handler, loaded in this process (the "limit")."""
    import importlib.util

    path = PROJECTS / project / "handler.py"
    spec = importlib.util.spec_from_file_location(f"bench_{project}_handler", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    job_spec = {"job_id": "limit", "api_name": project, "config": config or {}}
    return module.Handler(config or {}, job_spec)


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def cpu_seconds(times: Any) -> float:
    return float(times.user + times.system)
