"""Latency: submit to the first handle_batch call, on an idle daemon, no-op handler.

Each job (1 item, 1 worker) starts when the previous one has ended and the daemon and its
processes are quiet (see Daemon.wait_idle: a daemon may keep a spare worker between jobs);
the handler writes time.time() to a file on its first call. Baseline: the start of a bare
worker process, `python -c "import handler"` in the project folder (interpreter start plus
importing the handler module), timed in the same run.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from batchd.client import TERMINAL_STATUSES
from bench.common import (
    PROJECTS,
    Context,
    Daemon,
    Result,
    Target,
    job_body,
    percentile,
    progress,
    ratio,
)

KEY = "latency"
TITLE = "Latency: submission to the first handle_batch call"
BASELINE_STARTS = 10


def bare_worker_start_s() -> float:
    """Median wall time of `python -c "import handler"` in the handler's folder."""
    times = []
    for _ in range(BASELINE_STARTS):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "import handler"], cwd=PROJECTS / "first_call", check=True
        )
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def wait_file(path: Path, timeout: float = 60) -> float:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the handler never wrote {path}")
        time.sleep(0.005)
    return float(path.read_text())


def run(ctx: Context) -> Result:
    jobs = ctx.sizes.latency_jobs
    result = Result(
        KEY,
        TITLE,
        f"{jobs} jobs one after another (1 item, 1 worker each), each submitted once the "
        "previous one has ended and the daemon's processes are quiet; from the POST "
        "to the time.time() the handler wrote on its first handle_batch call. p99 is the "
        "nearest rank (of 50, the largest).",
    )
    for attempt in range(1, ctx.runs + 1):
        baseline = bare_worker_start_s()
        with Daemon(ctx.workdir, "latency") as daemon:
            latencies = first_call_latencies(daemon, daemon.deploy("first_call"), jobs)
        p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
        progress(
            f"latency run {attempt}/{ctx.runs}: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} "
            f"ms; bare worker start {baseline * 1000:.0f} ms"
        )
        result.add("p50", "ms", p50 * 1000, 1)
        result.add("p99", "ms", p99 * 1000, 1)
        result.add("baseline: bare worker start + import handler", "ms", baseline * 1000, 1)
    result.targets.append(
        Target(
            "latency p50 / bare worker start",
            ratio(
                result.median("p50"), result.median("baseline: bare worker start + import handler")
            ),
            "<=",
            3.0,
            "x",
            2,
        )
    )
    return result


def first_call_latencies(daemon: Daemon, api: str, jobs: int) -> list[float]:
    """Seconds from each submission to its first handle_batch call, one job at a time on
    an idle daemon (the API's handler writes a mark file named after its job)."""
    marks = Path(tempfile.mkdtemp(dir=daemon.root))
    body = job_body([0], 1, config={"mark_dir": str(marks)}, workers=1)
    found = []
    for _ in range(jobs):
        daemon.wait_idle()
        submitted = time.time()
        job_id = str(daemon.submit(api, body)["job_id"])
        found.append(wait_file(marks / job_id) - submitted)
        while daemon.status(api, job_id)["status"] not in TERMINAL_STATUSES:
            time.sleep(0.01)
    return found
