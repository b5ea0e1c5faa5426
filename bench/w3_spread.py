"""W3 spread: one job of 20 ms batches over 1, 2 and 3 PostgreSQL nodes.

N daemons share one schema, max_workers = 2 each; one job asking for 2 x N workers is
submitted to the first, and the others adopt it (the cluster core): every node runs 2 of
its workers. The handler sleeps 20 ms per batch, so the ideal is 2 x N / 0.020 batches
per second; the job is sized to take Sizes.w3_seconds (10 s) at that rate.
"""

from __future__ import annotations

import contextlib

from bench import pg_server
from bench.common import (
    WORKERS,
    Context,
    Daemon,
    Result,
    Target,
    job_body,
    progress,
    ratio,
    run_job,
)

KEY = "W3"
TITLE = "W3 spread: 20 ms batches over 1, 2 and 3 PostgreSQL nodes"
SECTION = "Scale: PostgreSQL"
GROUP = "scale"
NODES = (1, 2, 3)
SLEEP_S = 0.020


def ideal_rate(nodes: int) -> float:
    return WORKERS * nodes / SLEEP_S


def spread(ctx: Context, dsn: str | None, nodes: int) -> float:
    """Batches per second of one job over `nodes` fresh daemons, POST to end_time; with
    no `dsn`, one daemon on SQLite."""
    items = round(ideal_rate(nodes) * ctx.sizes.w3_seconds)
    body = job_body(list(range(items)), 1, workers=WORKERS * nodes)
    queue = {} if dsn is None else {"database": dsn}
    with contextlib.ExitStack() as stack:
        daemons = [
            stack.enter_context(
                Daemon(ctx.workdir, f"w3-{nodes}-{index}", node_name=f"bench-{index}", **queue)
            )
            for index in range(nodes)
        ]
        api = daemons[0].deploy("sleep")
        done = run_job(daemons[0], api, body, ctx.sizes.drain_cap_s)
    if done.capped or done.status != "succeeded":
        raise RuntimeError(f"the W3 job over {nodes} node(s) ended {done.status}")
    return done.rate


def run(ctx: Context) -> Result:
    seconds = ctx.sizes.w3_seconds
    result = Result(
        KEY,
        TITLE,
        f"N daemons (nodes) on one fresh PostgreSQL schema per run, max_workers = {WORKERS} "
        f"each; one job of {ideal_rate(1) * seconds:,.0f} x N one-item batches asking for "
        f"{WORKERS} x N workers, submitted to the first node; the handler sleeps "
        f"{SLEEP_S * 1000:.0f} ms per batch, so the ideal is {WORKERS} x N / {SLEEP_S} "
        f"batches/s ({seconds:.0f} s of work). Batches/s from the POST to the job's end_time "
        "(admission, the other nodes adopting the job and every worker's start included).",
        section=SECTION,
    )
    if pg_server.missing(result):
        return result
    with pg_server.server() as server:
        for attempt in range(1, ctx.runs + 1):
            for nodes in NODES:
                with server.schema() as dsn:
                    rate = spread(ctx, dsn, nodes)
                share = ratio(rate, ideal_rate(nodes))
                progress(
                    f"W3 run {attempt}/{ctx.runs}, {nodes} node(s): {rate:,.0f} batches/s, "
                    f"{share:.1%} of ideal"
                )
                result.add(f"{nodes} node(s): batches/s", "batches/s", rate)
                result.add(f"{nodes} node(s): share of ideal", "%", share * 100, 1)
            # The same job on one SQLite node: what the grant protocol costs without
            # PostgreSQL's round trips.
            rate = spread(ctx, None, 1)
            share = ratio(rate, ideal_rate(1))
            progress(f"W3 run {attempt}/{ctx.runs}, 1 node on SQLite: {share:.1%} of ideal")
            result.add("1 node on SQLite (reference): share of ideal", "%", share * 100, 1)
    for nodes in NODES:
        result.targets.append(
            Target(
                f"W3 {nodes} node(s): achieved / ideal ({ideal_rate(nodes):,.0f} batches/s)",
                ratio(result.median(f"{nodes} node(s): batches/s"), ideal_rate(nodes)),
                ">=",
                0.95,
                digits=3,
            )
        )
    return result
