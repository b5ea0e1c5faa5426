"""Scale: W1 drain on one PostgreSQL node, beside the SQLite node and procrastinate.

The same W1 job (batch_size 1, no-op handler, 2 workers) on a daemon whose queue is on
PostgreSQL (a fresh schema per run, fsync and synchronous_commit on) and on one with the
default SQLite queue (synchronous = FULL); and procrastinate, the PostgreSQL job queue,
on the same server, one task per batch (bench/procrastinate_peer.py says what is timed).
"""

from __future__ import annotations

from dataclasses import dataclass

from bench import pg_server, procrastinate_peer
from bench.common import (
    Context,
    Daemon,
    Drain,
    Result,
    Target,
    cpu_seconds,
    job_body,
    progress,
    ratio,
    run_job,
)
from bench.pg_server import Server
from bench.w1_drain import describe

KEY = "pg-drain"
TITLE = "W1 drain, batch_size 1, on one PostgreSQL node"
SECTION = "Scale: PostgreSQL"
GROUP = "scale"
NODE = "bench-1"


@dataclass
class NodeDrain:
    drain: Drain
    # CPU seconds from the POST to the job's end: the daemon's own (its SQLite included),
    # and the PostgreSQL server's (0 on SQLite).
    daemon_cpu: float
    server_cpu: float


def drain(ctx: Context, body: bytes, tag: str, server: Server | None, **settings: str) -> NodeDrain:
    """One fresh daemon, one W1 job."""
    with Daemon(ctx.workdir, tag, **settings) as daemon:
        api = daemon.deploy("noop")
        own, served = cpu_seconds(daemon.ps().cpu_times()), server.cpu_seconds() if server else 0
        done = run_job(daemon, api, body, ctx.sizes.drain_cap_s)
        own = cpu_seconds(daemon.ps().cpu_times()) - own
        served = server.cpu_seconds() - served if server else 0
    if not done.capped and done.status != "succeeded":
        raise RuntimeError(f"the {tag} job ended {done.status}")
    return NodeDrain(done, own, served)


def run(ctx: Context) -> Result:
    n, tasks = ctx.sizes.w1_items, ctx.sizes.peer_tasks
    result = Result(
        KEY,
        TITLE,
        f"{n:,} items, batch_size 1, one job, no-op handler, 2 workers, on a daemon whose "
        f"queue is on PostgreSQL (`database` = a fresh schema per run, node_name {NODE!r}) "
        'and on one on SQLite (sqlite_synchronous = "full"), one after the other in each '
        "run; batches/s from the POST to the job's end_time, and from the 2xx to end_time "
        "(the drain: admission not timed); CPU seconds of the daemon (its SQLite "
        "included) and of the PostgreSQL server (postmaster and backends) from the POST to "
        "the end. procrastinate: "
        f"{tasks:,} no-op tasks (one per batch) deferred before its 2 worker processes "
        "(concurrency 1 each) start, not timed; tasks/s from the workers' launch to the "
        "last success, and from the first task's start to it (its events table's times).",
        section=SECTION,
    )
    if pg_server.missing(result):
        return result
    use_peer = procrastinate_peer.available()
    body = job_body(list(range(n)), 1)
    with pg_server.server() as server:
        result.note(f"PostgreSQL: {server.describe()}; the same disk as SQLite's state dir.")
        for attempt in range(1, ctx.runs + 1):
            with server.schema() as dsn:
                pg = drain(ctx, body, "pg", server, database=dsn, node_name=NODE)
            sqlite = drain(ctx, body, "sqlite", None, sqlite_synchronous="full")
            progress(f"pg-drain run {attempt}/{ctx.runs}: PostgreSQL {describe(pg.drain)}")
            progress(f"pg-drain run {attempt}/{ctx.runs}: SQLite {describe(sqlite.drain)}")
            for name, done in (("PostgreSQL", pg.drain), ("SQLite", sqlite.drain)):
                if done.capped:
                    result.note(
                        f"{name} did not finish within the {ctx.sizes.drain_cap_s:.0f} s cap "
                        "in some runs: its rate is the batches done over the time taken."
                    )
                result.add(f"batchd on {name}: submission to end", "batches/s", done.rate)
                result.add(f"batchd on {name}: drain once admitted", "batches/s", done.drain_rate)
                result.add(
                    f"batchd on {name}: admission (POST to 2xx)",
                    "s",
                    done.admitted_at - done.submitted_at,
                    2,
                )
            result.add("PostgreSQL node: daemon CPU, POST to end", "s", pg.daemon_cpu, 2)
            result.add("PostgreSQL node: server CPU, POST to end", "s", pg.server_cpu, 2)
            result.add("SQLite node: daemon CPU, POST to end", "s", sqlite.daemon_cpu, 2)
            if use_peer:
                peer = procrastinate_peer.run(server, ctx.workdir, tasks, ctx.sizes.drain_cap_s)
                progress(
                    f"pg-drain run {attempt}/{ctx.runs}: procrastinate {peer.rate:,.0f} tasks/s "
                    f"({peer.busy_rate:,.0f} from the first start)"
                )
                if peer.capped:
                    result.note(
                        f"procrastinate did not finish within {ctx.sizes.drain_cap_s:.0f} s: "
                        f"{peer.done:,}/{peer.tasks:,} done"
                    )
                result.add("procrastinate: workers' launch to last success", "tasks/s", peer.rate)
                result.add("procrastinate: first start to last success", "tasks/s", peer.busy_rate)
    pg_drain = result.median("batchd on PostgreSQL: drain once admitted")
    result.targets.append(
        Target("scale: PostgreSQL node drain once admitted", pg_drain, ">=", 30_000, "batches/s", 0)
    )
    if use_peer:
        result.note(f"procrastinate {procrastinate_peer.version()}.")
        # The peer's better figure (its own start-up left out) against batchd's drain.
        peer_best = result.median("procrastinate: first start to last success")
        result.targets.append(
            Target(
                "scale: PostgreSQL node / procrastinate",
                ratio(pg_drain, peer_best),
                ">=",
                10,
                "x",
                1,
            )
        )
    else:
        result.note("procrastinate is not installed: no peer figures (pip install -e '.[bench]').")
    result.targets.append(
        Target(
            "scale: PostgreSQL / SQLite node, drain once admitted",
            ratio(pg_drain, result.median("batchd on SQLite: drain once admitted")),
            unit="x",
        )
    )
    return result
