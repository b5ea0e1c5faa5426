"""FULL vs NORMAL: W1 (batch_size 1) with sqlite_synchronous = "normal", against the
"full" runs of W1 (run here too when W1 is not part of this invocation)."""

from __future__ import annotations

from bench.common import Context, Result, Target, progress, ratio
from bench.w1_drain import batchd_drain, describe

KEY = "sync"
TITLE = "sqlite_synchronous FULL vs NORMAL (W1)"


def run(ctx: Context) -> Result:
    n = ctx.sizes.w1_items
    result = Result(
        KEY,
        TITLE,
        f"W1 ({n:,} items, batch_size 1, no-op handler, 2 workers) under each setting; "
        "batches/s from the POST to the job's end_time.",
    )
    full_rates: list[float] = list(ctx.cache.get("w1_full_rates", []))
    if full_rates:
        result.note('The "full" runs are the W1 runs above.')
    for attempt in range(1, ctx.runs + 1):
        if len(full_rates) < attempt:
            drain = batchd_drain(ctx, n, 1, "full", "sync-full")
            progress(f"sync run {attempt}/{ctx.runs}: full {describe(drain)}")
            full_rates.append(drain.rate)
        drain = batchd_drain(ctx, n, 1, "normal", "sync-normal")
        progress(f"sync run {attempt}/{ctx.runs}: normal {describe(drain)}")
        if drain.capped:
            result.note(f"Some runs were capped at {ctx.sizes.drain_cap_s:.0f} s (see W1).")
        result.add("normal: submission to end", "batches/s", drain.rate)
    for rate in full_rates[: ctx.runs]:
        result.add("full: submission to end", "batches/s", rate)
    full = result.median("full: submission to end")
    normal = result.median("normal: submission to end")
    result.targets.append(Target("FULL / NORMAL", ratio(full, normal), ">=", 0.70, "", 2))
    return result
