"""W1 drain, batch_size 1: 100,000 tiny items in one job, no-op handler, 2 workers.

batchd (default sqlite_synchronous = "full") against huey (one task per batch) and the
limit (the same Handler called in a plain loop in one process).
"""

from __future__ import annotations

import time
from typing import Any

from bench import huey_peer
from bench.common import (
    Context,
    Daemon,
    Drain,
    Result,
    Target,
    job_body,
    load_handler,
    progress,
    ratio,
    run_job,
)

KEY = "W1"
TITLE = "W1 drain, batch_size 1"


def limit_rate(payloads: list[list[Any]]) -> float:
    """Batches per second of the no-op Handler called in a plain loop."""
    handler = load_handler("noop")
    start = time.perf_counter()
    for index, payload in enumerate(payloads):
        handler.handle_batch(payload, str(index))
    return ratio(len(payloads), time.perf_counter() - start)


def batchd_drain(ctx: Context, items: int, batch_size: int, synchronous: str, tag: str) -> Drain:
    """One fresh daemon, one job of `items` no-op items."""
    body = job_body(list(range(items)), batch_size)
    with Daemon(ctx.workdir, tag, sqlite_synchronous=synchronous) as daemon:
        api = daemon.deploy("noop")
        drain = run_job(daemon, api, body, ctx.sizes.drain_cap_s)
    if not drain.capped and drain.status != "succeeded":
        raise RuntimeError(f"the W1 job ended {drain.status}")
    return drain


def describe(drain: Drain, unit: str = "batches/s", scale: int = 1) -> str:
    text = f"{drain.rate * scale:,.0f} {unit}, drain {drain.drain_rate * scale:,.0f}"
    if drain.capped:
        text += f" (capped: {drain.succeeded:,}/{drain.total:,} done)"
    return text


def run(ctx: Context) -> Result:
    n = ctx.sizes.w1_items
    result = Result(
        KEY,
        TITLE,
        f"{n:,} items, batch_size 1, one job, no-op handler, {2} workers, "
        'sqlite_synchronous = "full"; batches/s from the POST to the job\'s end_time, and the '
        "drain rate from the 2xx to end_time.",
    )
    payloads = [[i] for i in range(n)]
    full_rates: list[float] = []
    for attempt in range(1, ctx.runs + 1):
        limit = limit_rate(payloads)
        result.add("limit: handler in a plain loop", "batches/s", limit)
        drain = batchd_drain(ctx, n, 1, "full", "w1")
        progress(f"W1 run {attempt}/{ctx.runs}: batchd {describe(drain)}")
        if drain.capped:
            result.note(
                f"batchd did not finish within the {ctx.sizes.drain_cap_s:.0f} s cap in some "
                "runs: the job was stopped there and its rate is the batches done so far "
                "over the time taken."
            )
        result.add("batchd: submission to end", "batches/s", drain.rate)
        result.add("batchd: drain once admitted", "batches/s", drain.drain_rate)
        result.add(
            "batchd: admission (POST to 2xx)", "s", drain.admitted_at - drain.submitted_at, 2
        )
        full_rates.append(drain.rate)
        if ctx.huey:
            peer = huey_peer.run_or_note(
                result, ctx.workdir, "noop", payloads, ctx.sizes.drain_cap_s * 2
            )
            if peer is not None:
                progress(f"W1 run {attempt}/{ctx.runs}: huey {peer.rate:,.0f} batches/s")
                result.add("huey: enqueue to all results", "batches/s", peer.rate)
                result.add("huey: enqueue alone", "s", peer.enqueue_s, 2)
    ctx.cache["w1_full_rates"] = full_rates
    batchd = result.median("batchd: submission to end")
    if ctx.huey:
        result.targets.append(
            Target(
                "W1 batchd / huey",
                ratio(batchd, result.median("huey: enqueue to all results")),
                ">=",
                30,
                "x",
                1,
            )
        )
    else:
        result.note("huey is not installed: no huey figures (pip install -e '.[bench]').")
    result.targets.append(
        Target(
            "W1 drain rate once admitted",
            result.median("batchd: drain once admitted"),
            ">=",
            100_000,
            "batches/s",
            0,
        )
    )
    result.targets.append(
        Target(
            "W1 batchd / limit",
            ratio(batchd, result.median("limit: handler in a plain loop")),
            unit="x",
            digits=4,
        )
    )
    return result
