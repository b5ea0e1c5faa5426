"""Status under load: 8 clients (processes of their own) GET the job's status back to back
while W1 (batch_size 1, no-op handler) drains; requests/s and latency percentiles over
every request of every client. Measured for the whole drain, or its first
`status_window_s` (then the job is stopped).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from batchd.client import TERMINAL_STATUSES
from bench.common import (
    REPO,
    Context,
    Daemon,
    Result,
    Target,
    job_body,
    percentile,
    progress,
    ratio,
)

KEY = "status"
TITLE = "Job status under load (8 clients while W1 drains)"


def run(ctx: Context) -> Result:
    n, clients, window = ctx.sizes.w1_items, ctx.sizes.status_clients, ctx.sizes.status_window_s
    result = Result(
        KEY,
        TITLE,
        f"{clients} client processes (batchd.client, one connection per request) GET the "
        f"status of a W1 job ({n:,} items, batch_size 1, 2 workers) back to back from its "
        f"2xx until it ends, or for {window:g} s at most.",
    )
    body = job_body(list(range(n)), 1)
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    for attempt in range(1, ctx.runs + 1):
        with Daemon(ctx.workdir, "status") as daemon:
            api = daemon.deploy("noop")
            procs = [
                subprocess.Popen(
                    [sys.executable, "-m", "bench.status_client", daemon.url, api, str(window)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    cwd=REPO,
                    env=env,
                )
                for _ in range(clients)
            ]
            try:
                # Let the clients' interpreters start before the clock does.
                time.sleep(1.0)
                job_id = str(daemon.submit(api, body)["job_id"])
                for proc in procs:
                    assert proc.stdin is not None
                    proc.stdin.write(job_id.encode() + b"\n")
                    proc.stdin.close()
                reports = []
                for proc in procs:
                    assert proc.stdout is not None
                    reports.append(json.loads(proc.stdout.read()))
                    proc.wait(60)
            finally:
                for proc in procs:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
            status = daemon.status(api, job_id)
            drained = int(status["batch_metrics"]["succeeded"])
            if status["status"] not in TERMINAL_STATUSES:
                daemon.client.stop_job(api, job_id)
        latencies = [s for report in reports for s in report["latencies"]]
        errors = sum(int(report["errors"]) for report in reports)
        span = max(r["end"] for r in reports) - min(r["start"] for r in reports)
        rps = ratio(len(latencies), span)
        p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
        progress(
            f"status run {attempt}/{ctx.runs}: {rps:,.0f} requests/s, p50 {p50 * 1000:.1f} ms, "
            f"p99 {p99 * 1000:.1f} ms over {span:.1f} s ({len(latencies):,} requests, "
            f"{errors} errors; job {status['status']}, "
            f"{drained:,} batches done)"
        )
        result.add("requests/s", "1/s", rps)
        result.add("p50", "ms", p50 * 1000, 1)
        result.add("p99", "ms", p99 * 1000, 1)
        result.add("max", "ms", max(latencies) * 1000, 1)
        result.add("requests measured", "", len(latencies))
        result.add("failed requests", "", errors)
        result.add("window", "s", span, 1)
        result.add("W1 drain meanwhile", "batches/s", ratio(drained, span))
    result.targets.append(
        Target("status p99 under load", result.median("p99"), "<=", 50.0, "ms", 1)
    )
    return result
