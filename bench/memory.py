"""Memory: the daemon's RSS with 10,000 and with 1,000,000 batches queued.

A fresh daemon per size; the job's workers block in __init__ until a file appears (the
gate handler), so every batch stays queued while the job is running. RSS is read with
psutil a second after the 2xx; the peak during the admission is sampled every 50 ms.
"""

from __future__ import annotations

import threading
import time

import psutil

from bench.common import Context, Daemon, Result, Target, job_body, progress, ratio

KEY = "memory"
TITLE = "Daemon memory with batches queued"
MIB = 1024 * 1024
SETTLE_S = 1.0


def queued_rss(ctx: Context, batches: int) -> tuple[float, float]:
    """(RSS with `batches` queued, peak RSS during their admission), in MiB."""
    with Daemon(ctx.workdir, f"memory{batches}") as daemon:
        gate = daemon.root / "gate"
        api = daemon.deploy("gate")
        body = job_body(list(range(batches)), 1, config={"gate": str(gate)})
        proc = daemon.ps()
        peak = [float(proc.memory_info().rss)]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                try:
                    peak.append(float(proc.memory_info().rss))
                except psutil.Error:
                    return
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        job_id = str(daemon.submit(api, body)["job_id"])
        time.sleep(SETTLE_S)
        status = daemon.status(api, job_id)
        rss = float(proc.memory_info().rss)
        done.set()
        sampler.join()
        if status["batches_in_queue"] != batches:
            raise RuntimeError(
                f"{status['batches_in_queue']} batches queued, not {batches} ({status['status']})"
            )
        daemon.client.stop_job(api, job_id)
        gate.touch()
    return rss / MIB, max(peak) / MIB


def run(ctx: Context) -> Result:
    small, large = ctx.sizes.memory_small, ctx.sizes.memory_large
    result = Result(
        KEY,
        TITLE,
        f"daemon RSS (psutil) {SETTLE_S:g} s after the 2xx of a job of {small:,}, then of "
        f"{large:,} one-item batches, each on a fresh daemon, the workers held in __init__ "
        "so that every batch stays queued.",
    )
    for attempt in range(1, ctx.runs + 1):
        rss_small, peak_small = queued_rss(ctx, small)
        rss_large, peak_large = queued_rss(ctx, large)
        progress(
            f"memory run {attempt}/{ctx.runs}: RSS {rss_small:.0f} MiB with {small:,} queued, "
            f"{rss_large:.0f} MiB with {large:,} (peak {peak_large:.0f} MiB)"
        )
        result.add(f"RSS, {small:,} queued", "MiB", rss_small, 1)
        result.add(f"RSS, {large:,} queued", "MiB", rss_large, 1)
        result.add(f"peak RSS while admitting {small:,}", "MiB", peak_small, 1)
        result.add(f"peak RSS while admitting {large:,}", "MiB", peak_large, 1)
    result.targets.append(
        Target(
            f"RSS({large:,}) / RSS({small:,})",
            ratio(result.median(f"RSS, {large:,} queued"), result.median(f"RSS, {small:,} queued")),
            "<=",
            1.5,
            "x",
            2,
        )
    )
    return result
