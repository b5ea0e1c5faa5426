"""The driver comparison: batchd's PostgreSQL store drained over asyncpg (the store as it
ships) and over psycopg 3 (async), the same store code over either driver.

psycopg runs under :class:`PsycopgConnection`, which offers the few asyncpg connection
methods the store calls (execute, fetch, fetchrow, fetchval, transaction) over a psycopg
``AsyncConnection`` whose cursors are ``AsyncRawCursor``: PostgreSQL's own ``$n``
placeholders, so every statement of ``batchd/store/postgres/sql/*.sql`` is sent as it is
written, prepared on first use as asyncpg prepares it. Only leasing and storing
successes go through it here; the job is admitted over asyncpg before any clock starts.

The drain: a running job of N batches of one item, and WORKERS loops that each lease a
grant, then store its successes (results none, as the no-op handler's), with the grant
sizes the daemon's scheduler would pick (:mod:`batchd.scheduler.policy`: one batch
first, then as many as a worker handles in LEASE_TARGET_SECONDS, at most
MAX_LEASE_BATCHES and a 1/LEASE_SHARE_DIVISOR share of the job). Timed: from the first
lease to the last success stored; no daemon, no worker processes, no HTTP.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from batchd.scheduler import policy
from batchd.store.postgres.store import PostgresStore
from batchd.store.records import JobStatus, NewJob, Success, encode_payload, new_job_id
from bench import pg_server
from bench.common import WORKERS, Context, Result, Target, progress, ratio

LEASE_TIMEOUT = 60.0
# A no-op batch's time as a worker reports it: what sets the grant size.
NOOP_SECONDS = 1e-6
DRIVERS = ("asyncpg", "psycopg")


def libpq_conninfo(dsn: str) -> tuple[str, dict[str, str]]:
    """An asyncpg URL as psycopg takes it: its `search_path` parameter (which asyncpg
    passes on as a server setting) becomes libpq's `options`."""
    parts = urlsplit(dsn)
    query = dict(parse_qsl(parts.query))
    base = urlunsplit(parts._replace(query=""))
    schema = query.pop("search_path", None)
    return base, ({"options": f"-c search_path={schema}"} if schema else {})


class _Transaction:
    def __init__(self, conn: PsycopgConnection) -> None:
        self._conn = conn

    async def start(self) -> None:
        await self._conn.execute("BEGIN")

    async def commit(self) -> None:
        await self._conn.execute("COMMIT")

    async def rollback(self) -> None:
        await self._conn.execute("ROLLBACK")


class PsycopgConnection:
    """The asyncpg connection methods the store calls, over psycopg 3."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    @classmethod
    async def connect(cls, dsn: str) -> PsycopgConnection:
        import psycopg

        conninfo, options = libpq_conninfo(dsn)
        conn = await psycopg.AsyncConnection.connect(
            conninfo,
            autocommit=True,
            # Prepared on first use, as asyncpg's statement cache does.
            prepare_threshold=0,
            cursor_factory=psycopg.AsyncRawCursor,
            **options,
        )
        return cls(conn)

    def is_closed(self) -> bool:
        return bool(self._conn.closed)

    def terminate(self) -> None:
        # Only after a lost connection (the store's reconnect path): nothing to wait for.
        self._conn.pgconn.finish()

    async def _run(self, sql: str, args: tuple[Any, ...]) -> Any:
        # Binary, as asyncpg's protocol is (bytea payloads are not hex-encoded).
        return await self._conn.execute(sql, args or None, binary=True)

    async def execute(self, sql: str, *args: Any) -> str:
        cursor = await self._run(sql, args)
        return str(cursor.statusmessage or "")

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        cursor = await self._run(sql, args)
        return list(await cursor.fetchall())

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        cursor = await self._run(sql, args)
        return await cursor.fetchone()

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else row[0]

    def transaction(self) -> _Transaction:
        return _Transaction(self)

    async def close(self) -> None:
        await self._conn.close()


class PsycopgStore(PostgresStore):
    """The PostgreSQL store over psycopg: its writer and its reader are psycopg
    connections; the schema is already there (the asyncpg store made it)."""

    async def open(self) -> None:
        self._writer = await PsycopgConnection.connect(self.dsn)  # type: ignore[assignment]
        self._reader = await PsycopgConnection.connect(self.dsn)  # type: ignore[assignment]


async def _running_job(dsn: str, batches: int) -> str:
    """A running job of `batches` one-item batches, admitted over asyncpg."""
    store = PostgresStore(dsn)
    await store.open()
    try:
        job = NewJob(
            job_id=new_job_id(),
            api_name="bench",
            api_version=1,
            kind="item_list",
            workers=WORKERS,
            config={},
            timeout=None,
            max_receive_count=1,
            priority=0,
            created_at=time.time(),
        )
        await store.create_job(job, [encode_payload([i]) for i in range(batches)])
        assert await store.set_status(job.job_id, JobStatus.RUNNING)
        return job.job_id
    finally:
        await store.close()


async def _drain(store: PostgresStore, job_id: str, total: int) -> int:
    """WORKERS loops of lease, then succeed, until nothing is left; the batches done."""
    lease_size = 1
    done = 0

    async def worker() -> None:
        nonlocal lease_size, done
        while True:
            size = policy.grant_size(
                lease_size=lease_size,
                total_batches=total,
                workers=WORKERS,
                batch_timeout=None,
                recycle=None,
                batches_done=0,
                held=0,
            )
            leases = await store.lease(job_id, size, LEASE_TIMEOUT)
            if not leases:
                return
            successes = [Success(lease.seq, lease.token, NOOP_SECONDS, None) for lease in leases]
            accepted = await store.succeed(job_id, successes)
            done += accepted
            lease_size = policy.lease_size_for(NOOP_SECONDS * len(leases), len(leases))

    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    return done


async def drain_rate(dsn: str, driver: str, batches: int) -> float:
    """Batches per second of a store-level drain of a fresh job over `driver`."""
    job_id = await _running_job(dsn, batches)
    store = PostgresStore(dsn) if driver == "asyncpg" else PsycopgStore(dsn)
    await store.open()
    try:
        start = time.perf_counter()
        done = await _drain(store, job_id, batches)
        elapsed = time.perf_counter() - start
    finally:
        await store.close()
    if done != batches:
        raise RuntimeError(f"{driver}: {done} of {batches} batches succeeded")
    return ratio(done, elapsed)


def run_loop(main: Callable[[], Awaitable[float]]) -> float:
    """On uvloop where the daemon would use it."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())  # type: ignore[arg-type]
    return uvloop.run(main())  # type: ignore[arg-type]


KEY = "drivers"
TITLE = "PostgreSQL driver: asyncpg against psycopg 3, store-level drain"
SECTION = "Scale: PostgreSQL"
GROUP = "scale"


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for package in DRIVERS:
        try:
            found.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            found.append(f"{package} not installed")
    return ", ".join(found)


def run(ctx: Context) -> Result:
    n = ctx.sizes.driver_batches
    result = Result(
        KEY,
        TITLE,
        f"A running job of {n:,} one-item batches (admitted over asyncpg, not timed); "
        f"{WORKERS} loops in one process each lease a grant and store its successes "
        "through batchd's PostgresStore, grant sizes as the scheduler picks them (1, then "
        "up to MAX_LEASE_BATCHES); batches/s from the first lease to the last success "
        "stored. The same store code over each driver (bench/pg_driver.py), uvloop, a "
        "fresh schema per run.",
        section=SECTION,
    )
    if pg_server.missing(result):
        return result
    import importlib.util

    drivers = [d for d in DRIVERS if importlib.util.find_spec(d) is not None]
    with pg_server.server() as server:
        for attempt in range(1, ctx.runs + 1):
            # Each run in the other order: neither driver always goes first.
            for driver in drivers if attempt % 2 else drivers[::-1]:
                with server.schema() as dsn:
                    rate = run_loop(lambda dsn=dsn, driver=driver: drain_rate(dsn, driver, n))
                progress(f"drivers run {attempt}/{ctx.runs}: {driver} {rate:,.0f} batches/s")
                result.add(f"{driver}: lease + succeed", "batches/s", rate)
    result.note(_versions() + ".")
    if len(drivers) < len(DRIVERS):
        result.note("A driver is not installed: no comparison (pip install -e '.[bench]').")
    result.targets.append(
        Target(
            "drivers: asyncpg / psycopg 3, store-level drain",
            ratio(
                result.median("asyncpg: lease + succeed"),
                result.median("psycopg: lease + succeed"),
            ),
            unit="x",
        )
    )
    return result
