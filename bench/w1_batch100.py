"""W1 with batch_size 100: the same tiny items, 100 per batch; items/s, huey with the same
100-item tasks."""

from __future__ import annotations

from bench import huey_peer
from bench.common import Context, Result, Target, chunks, progress, ratio
from bench.w1_drain import batchd_drain, describe, limit_rate

KEY = "W1-100"
TITLE = "W1 drain, batch_size 100"
BATCH = 100


def run(ctx: Context) -> Result:
    n = ctx.sizes.w1_100_items
    result = Result(
        KEY,
        TITLE,
        f"{n:,} items, batch_size {BATCH} ({n // BATCH:,} batches), one job, no-op handler, "
        '2 workers, sqlite_synchronous = "full"; items/s from the POST to the job\'s end_time.',
    )
    payloads = list(chunks(list(range(n)), BATCH))
    for attempt in range(1, ctx.runs + 1):
        result.add("limit: handler in a plain loop", "items/s", limit_rate(payloads) * BATCH)
        drain = batchd_drain(ctx, n, BATCH, "full", "w1b100")
        progress(f"W1-100 run {attempt}/{ctx.runs}: batchd {describe(drain, 'items/s', BATCH)}")
        if drain.capped:
            result.note(f"batchd did not finish within the {ctx.sizes.drain_cap_s:.0f} s cap.")
        result.add("batchd: submission to end", "items/s", drain.rate * BATCH)
        result.add("batchd: drain once admitted", "items/s", drain.drain_rate * BATCH)
        if ctx.huey:
            peer = huey_peer.run_or_note(
                result, ctx.workdir, "noop", payloads, ctx.sizes.drain_cap_s * 2
            )
            if peer is not None:
                progress(f"W1-100 run {attempt}/{ctx.runs}: huey {peer.rate * BATCH:,.0f} items/s")
                result.add("huey: enqueue to all results", "items/s", peer.rate * BATCH)
    batchd = result.median("batchd: submission to end")
    if ctx.huey:
        huey = result.median("huey: enqueue to all results")
        result.targets.append(
            Target("W1-100 batchd / huey", ratio(batchd, huey), unit="x", digits=1)
        )
    else:
        result.note("huey is not installed: no huey figures.")
    limit = result.median("limit: handler in a plain loop")
    result.targets.append(Target("W1-100 batchd / limit", ratio(batchd, limit), unit="x", digits=4))
    return result
