"""The embedded SQLite store: the only code in batchd that writes SQL.

One writer connection, every write an explicit ``BEGIN IMMEDIATE`` transaction under
an asyncio lock (aiosqlite runs each statement in its own thread, so a transaction
spanning several awaits must not interleave with another). A second connection
serves reads, so status requests are answered from the last committed state while
a large job is being admitted.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import json
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite

from batchd.constants import (
    CHUNK_CACHE_JOBS,
    GRANT_MAX_BYTES,
    PRUNE_CHUNK_ROWS,
    SCHEMA_VERSION,
    STREAM_PAGE_ROWS,
    WAL_SIZE_LIMIT,
)
from batchd.observe.metrics import Metrics
from batchd.store.base import (
    TERMINAL_STATUSES,
    ApiRecord,
    BatchCounts,
    BatchState,
    DeadLetter,
    Failure,
    JobRecord,
    JobStatus,
    Lease,
    MetricCounts,
    NewJob,
    Result,
    Success,
    encode_payload,
)
from batchd.store.chunks import BatchChunks, Chunk

_SEQ_BITS = 32
# Batches per chunk in a schema 2 database (where CHUNK_BATCHES was fixed at 4096).
_V2_CHUNK_BATCHES = 4096
_TERMINAL = tuple(str(s) for s in TERMINAL_STATUSES)
_TERMINAL_SQL = ", ".join(f"'{s}'" for s in _TERMINAL)

_JOB_COLUMNS = (
    "job_id, api_name, api_version, kind, status, workers, config, timeout, "
    "max_receive_count, priority, total_batch_count, created_at, end_time, error, "
    "has_on_complete, retry_of, batch_timeout, pruned_at"
)


# A job's batch counts live on its row, kept by every transaction that moves a batch, so
# a status read is one row (one snapshot) whatever the job's size.
_COUNTS_SQL = (
    "SELECT queued_count, leased_count, succeeded_count, dead_count, failure_count, "
    "duration_sum FROM jobs WHERE key = ?"
)

_QUEUE_DEPTH_SQL = (
    "SELECT api_name, queued_count, leased_count FROM jobs "
    "WHERE status IN ('pending', 'enqueuing', 'running')"
)

# Rebuilds the counters from the batches themselves (the schema 1 -> 2 migration).
_RECOUNT_SQL = (
    "UPDATE jobs SET "
    + ", ".join(
        f"{state}_count = (SELECT count(*) FROM batches WHERE state = '{state}' "
        f"AND id BETWEEN key << {_SEQ_BITS} AND (key << {_SEQ_BITS}) | {(1 << _SEQ_BITS) - 1})"
        for state in ("queued", "leased", "succeeded", "dead")
    )
    + f", failure_count = (SELECT count(*) FROM failures WHERE batch BETWEEN key << {_SEQ_BITS} "
    f"AND (key << {_SEQ_BITS}) | {(1 << _SEQ_BITS) - 1})"
    + ", duration_sum = coalesce((SELECT sum(duration) FROM batches WHERE state = 'succeeded' "
    f"AND id BETWEEN key << {_SEQ_BITS} AND (key << {_SEQ_BITS}) | {(1 << _SEQ_BITS) - 1}), 0)"
)

_COUNTER_COLUMNS = (
    "queued_count INTEGER NOT NULL DEFAULT 0",
    "leased_count INTEGER NOT NULL DEFAULT 0",
    "succeeded_count INTEGER NOT NULL DEFAULT 0",
    "dead_count INTEGER NOT NULL DEFAULT 0",
    "failure_count INTEGER NOT NULL DEFAULT 0",
    "duration_sum REAL NOT NULL DEFAULT 0",
    # Every batch of a schema 1 job has its row.
    "materialized INTEGER NOT NULL DEFAULT 0",
)


_SUCCEED_ONE = (
    "UPDATE batches SET state = 'succeeded', result = ?, duration = ?, lease_token = NULL, "
    "lease_expires_at = NULL WHERE id = ? AND state = 'leased' AND lease_token = ?"
)
# A run of consecutive batches of one grant, none with a result, is one statement: SQLite
# walks the rows itself instead of Python binding each one. Each gets the run's mean time.
_SUCCEED_RUN = (
    "UPDATE batches SET state = 'succeeded', duration = ?, lease_token = NULL, "
    "lease_expires_at = NULL WHERE id BETWEEN ? AND ? AND state = 'leased' AND lease_token = ?"
)


def _runs(first: int, outcomes: Sequence[Success]) -> list[tuple[float, int, int, int]]:
    """(mean duration, first id, last id, token) per run of consecutive seqs and one token."""
    if not outcomes:
        return []
    # The usual report: one grant's batches in order. Told in C, without sorting.
    seqs = [o.seq for o in outcomes]
    head = outcomes[0]
    if seqs == list(range(head.seq, head.seq + len(seqs))) and all(
        o.token == head.token for o in outcomes
    ):
        mean = sum(o.duration for o in outcomes) / len(outcomes)
        return [(mean, first + head.seq, first + seqs[-1], head.token)]
    runs: list[tuple[float, int, int, int]] = []
    ordered = sorted(outcomes, key=lambda o: (o.token, o.seq))
    start = 0
    for index in range(1, len(ordered) + 1):
        if (
            index < len(ordered)
            and ordered[index].token == ordered[start].token
            and ordered[index].seq == ordered[index - 1].seq + 1
        ):
            continue
        run = ordered[start:index]
        mean = sum(o.duration for o in run) / len(run)
        runs.append((mean, first + run[0].seq, first + run[-1].seq, run[0].token))
        start = index
    return runs


def _batch_range(key: int) -> tuple[int, int]:
    first = key << _SEQ_BITS
    return first, first | ((1 << _SEQ_BITS) - 1)


def _seq(batch: int) -> int:
    return batch & ((1 << _SEQ_BITS) - 1)


def _job(row: Sequence[Any]) -> JobRecord:
    return JobRecord(
        job_id=row[0],
        api_name=row[1],
        api_version=row[2],
        kind=row[3],
        status=JobStatus(row[4]),
        workers=row[5],
        config=json.loads(row[6]),
        timeout=row[7],
        max_receive_count=row[8],
        priority=row[9],
        total_batch_count=row[10],
        created_at=row[11],
        end_time=row[12],
        error=row[13],
        has_on_complete=None if row[14] is None else bool(row[14]),
        retry_of=row[15],
        batch_timeout=row[16],
        pruned_at=row[17],
    )


def _api(row: Sequence[Any]) -> ApiRecord:
    return ApiRecord(
        name=row[0],
        version=row[1],
        spec=json.loads(row[2]),
        dotenv=json.loads(row[3]),
        created_at=row[4],
    )


class UnknownJob(KeyError):
    pass


class SqliteStore:
    def __init__(
        self, path: Path, synchronous: str = "full", metrics: Metrics | None = None
    ) -> None:
        self.path = path
        self.metrics = metrics or Metrics()
        self.synchronous = synchronous.upper()
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._keys: dict[str, int] = {}
        # Per job key: the index of the chunk last leased from, decoded.
        self._chunk_cache: dict[int, tuple[int, list[Any]]] = {}
        self._pending_successes: list[tuple[int, list[Any], list[Any], asyncio.Future[int]]] = []
        self._committing = False
        self._commit_task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = await self._connect()
        try:
            await self._migrate()
            self._reader = await self._connect()
        except BaseException:
            await self.close()
            raise

    async def _connect(self) -> aiosqlite.Connection:
        # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves.
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            for pragma in (
                # Only takes effect on a new database; lets pruning give space back in steps.
                "auto_vacuum=INCREMENTAL",
                "journal_mode=WAL",
                f"journal_size_limit={WAL_SIZE_LIMIT}",
                f"synchronous={self.synchronous}",
                "foreign_keys=ON",
                "busy_timeout=5000",
            ):
                await self._exec(conn, f"PRAGMA {pragma}")
        except BaseException:
            # A damaged file fails here; the connection's thread would keep the process alive.
            await conn.close()
            raise
        return conn

    async def _migrate(self) -> None:
        version = await self._scalar(self._w, "PRAGMA user_version")
        if version == SCHEMA_VERSION:
            return
        if version in (1, 2):
            async with self._transaction() as db:
                if version == 1:
                    await self._migrate_from_1(db)
                await self._renumber_chunks(db)
                await self._exec(db, f"PRAGMA user_version={SCHEMA_VERSION}")
            return
        if version != 0:
            raise RuntimeError(
                f"{self.path} has schema version {version}; this batchd knows {SCHEMA_VERSION}"
            )
        schema = resources.files("batchd.store").joinpath("schema.sql").read_text()
        statements = [s.strip() for s in schema.split(";") if _has_sql(s)]
        async with self._transaction() as db:
            for statement in statements:
                await self._exec(db, statement)
            await self._exec(db, f"PRAGMA user_version={SCHEMA_VERSION}")

    async def _migrate_from_1(self, db: aiosqlite.Connection) -> None:
        """Schema 2 keeps each job's batch counts on its row."""
        for column in _COUNTER_COLUMNS:
            await self._exec(db, f"ALTER TABLE jobs ADD COLUMN {column}")
        await self._exec(db, _RECOUNT_SQL)
        await self._exec(db, "UPDATE jobs SET materialized = total_batch_count")
        await self._exec(db, "DROP INDEX batches_by_state")
        await self._exec(db, "CREATE INDEX batches_queued ON batches (id) WHERE state = 'queued'")
        await self._exec(db, "CREATE INDEX batches_dead ON batches (id) WHERE state = 'dead'")
        await self._exec(db, "CREATE TABLE chunks (id INTEGER PRIMARY KEY, payloads BLOB NOT NULL)")

    async def _renumber_chunks(self, db: aiosqlite.Connection) -> None:
        """Schema 3 numbers a chunk by the batches before it, not by its index: chunks are
        bounded by bytes too, so they no longer hold a fixed count. Every schema 2 chunk
        held _V2_CHUNK_BATCHES. Highest first, so that no new id is one still taken."""
        mask = (1 << _SEQ_BITS) - 1
        rows = await self._rows(db, "SELECT id FROM chunks WHERE id & ? > 0 ORDER BY id DESC", mask)
        await self._exec_many(
            db,
            "UPDATE chunks SET id = ? WHERE id = ?",
            [((id_ & ~mask) | ((id_ & mask) * _V2_CHUNK_BATCHES), id_) for (id_,) in rows],
        )

    async def close(self) -> None:
        if self._commit_task is not None:
            await asyncio.gather(self._commit_task, return_exceptions=True)
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    @property
    def _w(self) -> aiosqlite.Connection:
        assert self._writer is not None, "store is not open"
        return self._writer

    @property
    def _r(self) -> aiosqlite.Connection:
        assert self._reader is not None, "store is not open"
        return self._reader

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._write_lock:
            await self._exec(self._w, "BEGIN IMMEDIATE")
            try:
                yield self._w
            except BaseException:
                # SQLite may have rolled back already (disk full does); the original
                # error is the one worth raising.
                if self._w.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        await self._exec(self._w, "ROLLBACK")
                raise
            with self.metrics.commit_timer():
                await self._exec(self._w, "COMMIT")

    @staticmethod
    async def _exec(conn: aiosqlite.Connection, sql: str, *params: Any) -> int:
        async with conn.execute(sql, params) as cursor:
            return cursor.rowcount

    @staticmethod
    async def _exec_many(conn: aiosqlite.Connection, sql: str, rows: Iterable[Any]) -> int:
        async with conn.executemany(sql, rows) as cursor:
            return cursor.rowcount

    @staticmethod
    async def _rows(conn: aiosqlite.Connection, sql: str, *params: Any) -> list[Any]:
        # Execute and fetch in one call into the connection's thread: a statement left
        # open between awaits would hold its read snapshot, and every other coroutine's
        # statement on the same connection would read that stale snapshot too.
        return list(await conn.execute_fetchall(sql, params))

    @classmethod
    async def _scalar(cls, conn: aiosqlite.Connection, sql: str, *params: Any) -> Any:
        rows = await cls._rows(conn, sql, *params)
        return rows[0][0] if rows else None

    async def _key(self, job_id: str) -> int:
        key = self._keys.get(job_id)
        if key is None:
            key = await self._scalar(self._r, "SELECT key FROM jobs WHERE job_id = ?", job_id)
            if key is None:
                key = await self._scalar(self._w, "SELECT key FROM jobs WHERE job_id = ?", job_id)
            if key is None:
                raise UnknownJob(job_id)
            self._keys[job_id] = key
        return int(key)

    async def checkpoint(self) -> None:
        """Copy the WAL into the database and truncate it, so it cannot grow without bound."""
        async with self._write_lock:
            await self._exec(self._w, "PRAGMA wal_checkpoint(TRUNCATE)")

    # -- APIs --------------------------------------------------------------------------

    async def add_api_version(
        self, name: str, spec: dict[str, Any], dotenv: dict[str, str]
    ) -> ApiRecord:
        now = time.time()
        async with self._transaction() as db:
            latest = await self._scalar(db, "SELECT max(version) FROM apis WHERE name = ?", name)
            version = (latest or 0) + 1
            await self._exec(
                db,
                "INSERT INTO apis (name, version, spec, dotenv, created_at) VALUES (?,?,?,?,?)",
                name,
                version,
                json.dumps(spec),
                json.dumps(dotenv),
                now,
            )
        return ApiRecord(name=name, version=version, spec=spec, dotenv=dotenv, created_at=now)

    async def get_api(self, name: str, version: int | None = None) -> ApiRecord | None:
        if version is None:
            sql = (
                "SELECT name, version, spec, dotenv, created_at FROM apis "
                "WHERE name = ? AND deleted_at IS NULL ORDER BY version DESC LIMIT 1"
            )
            params: tuple[Any, ...] = (name,)
        else:
            sql = (
                "SELECT name, version, spec, dotenv, created_at FROM apis "
                "WHERE name = ? AND version = ?"
            )
            params = (name, version)
        rows = await self._rows(self._r, sql, *params)
        return _api(rows[0]) if rows else None

    async def list_apis(self) -> list[ApiRecord]:
        sql = (
            "SELECT name, version, spec, dotenv, created_at FROM apis a WHERE deleted_at IS NULL "
            "AND version = (SELECT max(version) FROM apis b WHERE b.name = a.name) ORDER BY name"
        )
        return [_api(row) for row in await self._rows(self._r, sql)]

    async def api_versions(self, name: str) -> list[ApiRecord]:
        sql = (
            "SELECT name, version, spec, dotenv, created_at FROM apis "
            "WHERE name = ? AND deleted_at IS NULL ORDER BY version DESC"
        )
        return [_api(row) for row in await self._rows(self._r, sql, name)]

    async def delete_api(self, name: str) -> bool:
        async with self._transaction() as db:
            changed = await self._exec(
                db,
                "UPDATE apis SET deleted_at = ? WHERE name = ? AND deleted_at IS NULL",
                time.time(),
                name,
            )
            return changed > 0

    # -- jobs --------------------------------------------------------------------------

    async def create_job(self, job: NewJob, batches: BatchChunks | Sequence[bytes]) -> JobRecord:
        """Store the job and its payloads in one transaction: admission is all or nothing.

        The payloads are stored in chunks as admitted, not a row per batch: a batch gets
        its row when first leased. A chunk's id is its job's first id plus the number of
        batches before it. Chunks are read from `batches` one at a time (it may be a spool
        on disk), so the transaction holds one in memory, never the whole job."""
        if not isinstance(batches, BatchChunks):
            batches = BatchChunks.of(batches)
        async with self._transaction() as db:
            async with db.execute(
                "INSERT INTO jobs (job_id, api_name, api_version, kind, status, workers, config, "
                "timeout, max_receive_count, priority, total_batch_count, created_at, retry_of, "
                "batch_timeout) VALUES (?,?,?,?,?,?,?,?,?,?,0,?,?,?)",
                (
                    job.job_id,
                    job.api_name,
                    job.api_version,
                    job.kind,
                    JobStatus.PENDING,
                    job.workers,
                    json.dumps(job.config),
                    job.timeout,
                    job.max_receive_count,
                    job.priority,
                    job.created_at,
                    job.retry_of,
                    job.batch_timeout,
                ),
            ) as cursor:
                key = cursor.lastrowid
            assert key is not None
            first, _ = _batch_range(key)
            numbered = _NumberedChunks(first, batches.chunks)
            await self._exec_many(db, "INSERT INTO chunks (id, payloads) VALUES (?, ?)", numbered)
            total = batches.count
            if numbered.batches != total:
                raise ValueError(f"the chunks hold {numbered.batches} batches, not {total}")
            await self._exec(
                db,
                "UPDATE jobs SET total_batch_count = ?1, queued_count = ?1 WHERE key = ?2",
                total,
                key,
            )
            # Read back inside the transaction: the reader may not see the commit yet.
            (row,) = await self._rows(db, f"SELECT {_JOB_COLUMNS} FROM jobs WHERE key = ?", key)
        self._keys[job.job_id] = key
        return _job(row)

    async def get_job(self, job_id: str) -> JobRecord | None:
        sql = f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id = ?"
        rows = await self._rows(self._r, sql, job_id)
        return _job(rows[0]) if rows else None

    async def list_jobs(self, api_name: str, limit: int) -> list[JobRecord]:
        sql = (
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE api_name = ? "
            "ORDER BY created_at DESC, job_id DESC LIMIT ?"
        )
        return [_job(row) for row in await self._rows(self._r, sql, api_name, limit)]

    async def active_jobs(self) -> list[JobRecord]:
        sql = (
            f"SELECT {_JOB_COLUMNS} FROM jobs "
            "WHERE status IN ('pending', 'enqueuing', 'running') ORDER BY key"
        )
        return [_job(row) for row in await self._rows(self._w, sql)]

    async def set_status(self, job_id: str, status: JobStatus, error: str | None = None) -> bool:
        """Move a job to `status`; refused (False) once the job is terminal."""
        end_time = time.time() if status.terminal else None
        async with self._transaction() as db:
            changed = await self._exec(
                db,
                f"UPDATE jobs SET status = ?, end_time = ?, error = coalesce(?, error) "
                f"WHERE job_id = ? AND status NOT IN ({_TERMINAL_SQL})",
                status,
                end_time,
                error,
                job_id,
            )
            if changed and status.terminal:
                # Leases of a finished job are void; give the batches back, unburnt.
                key = await self._key(job_id)
                first, last = _batch_range(key)
                refunded = await self._exec(
                    db,
                    "UPDATE batches SET state = 'queued', attempts = attempts - 1, "
                    "lease_token = NULL, lease_expires_at = NULL "
                    "WHERE state = 'leased' AND id BETWEEN ? AND ?",
                    first,
                    last,
                )
                await _count(db, key, queued=refunded, leased=-refunded)
            return changed > 0

    async def set_has_on_complete(self, job_id: str, value: bool) -> None:
        async with self._transaction() as db:
            await self._exec(
                db, "UPDATE jobs SET has_on_complete = ? WHERE job_id = ?", int(value), job_id
            )

    async def counts(self, job_id: str) -> BatchCounts:
        """All counts from one statement, so from one snapshot: a batch moving between
        states while they are read is never counted twice or not at all."""
        (row,) = await self._rows(self._r, _COUNTS_SQL, await self._key(job_id))
        return BatchCounts(
            queued=row[0],
            leased=row[1],
            succeeded=row[2],
            dead=row[3],
            failed_attempts=row[4],
            average_time=row[5] / row[2] if row[2] else None,
        )

    async def metric_counts(self) -> MetricCounts:
        """Jobs by status, and the queued and leased batches of unfinished jobs by API."""
        statuses = await self._rows(self._r, "SELECT status, count(*) FROM jobs GROUP BY status")
        queue: dict[str, list[int]] = {}
        for api, queued, leased in await self._rows(self._r, _QUEUE_DEPTH_SQL):
            totals = queue.setdefault(api, [0, 0])
            totals[0] += queued
            totals[1] += leased
        return MetricCounts(
            jobs_by_status={status: count for status, count in statuses},
            queued_by_api={api: totals[0] for api, totals in queue.items()},
            leased_by_api={api: totals[1] for api, totals in queue.items()},
        )

    # -- batches -----------------------------------------------------------------------

    async def lease(self, job_id: str, limit: int, lease_timeout: float) -> list[Lease]:
        """Lease up to `limit` queued batches of a running job, oldest first."""
        key = await self._key(job_id)
        first, last = _batch_range(key)
        token = secrets.randbits(62)
        async with self._transaction() as db:
            async with db.execute(
                "UPDATE batches SET state = 'leased', attempts = attempts + 1, lease_token = ?, "
                "lease_expires_at = ? WHERE id IN ("
                "  SELECT id FROM batches WHERE state = 'queued' AND id BETWEEN ? AND ? "
                "  ORDER BY id LIMIT ?"
                ") AND EXISTS (SELECT 1 FROM jobs WHERE key = ? AND status = 'running') "
                "RETURNING id, attempts, payload",
                (token, time.time() + lease_timeout, first, last, limit, key),
            ) as cursor:
                rows: list[Any] = list(await cursor.fetchall())
            if len(rows) < limit:
                rows += await self._lease_fresh(db, key, limit - len(rows), token, lease_timeout)
            if rows:
                await _count(db, key, queued=-len(rows), leased=len(rows))
        mask = (1 << _SEQ_BITS) - 1
        leases = [Lease(job_id, row[0] & mask, token, row[1], row[2]) for row in rows]
        leases.sort(key=lambda lease: lease.seq)
        return leases

    async def _lease_fresh(
        self, db: aiosqlite.Connection, key: int, limit: int, token: int, lease_timeout: float
    ) -> list[tuple[int, int, bytes]]:
        """Give rows to (and lease) up to `limit` batches that have never been leased:
        the next ones of the job's chunks. Returns (id, attempts, payload) per batch."""
        found = await self._rows(
            db,
            "SELECT materialized, total_batch_count FROM jobs WHERE key = ? AND status = 'running'",
            key,
        )
        if not found or found[0][0] >= found[0][1]:
            return []
        done, total = found[0]
        start, end = done + 1, min(total, done + limit)
        first, _ = _batch_range(key)
        payloads = await self._payloads(db, key, start, end)
        # A grant of big payloads stops at GRANT_MAX_BYTES (one batch at least): the frame
        # to the worker stays far under its limit whatever the grant's length.
        keep = bisect.bisect_right(list(itertools.accumulate(map(len, payloads))), GRANT_MAX_BYTES)
        if keep < len(payloads):
            del payloads[max(1, keep) :]
            end = start + len(payloads) - 1
        expires = time.time() + lease_timeout
        rows = [
            (first + seq, 1, payload)
            for seq, payload in zip(range(start, end + 1), payloads, strict=True)
        ]
        await self._exec_many(
            db,
            "INSERT INTO batches (id, state, attempts, lease_token, lease_expires_at, payload) "
            "VALUES (?, 'leased', 1, ?, ?, ?)",
            [(row[0], token, expires, row[2]) for row in rows],
        )
        await self._exec(db, "UPDATE jobs SET materialized = ? WHERE key = ?", end, key)
        return rows

    async def _payloads(
        self, db: aiosqlite.Connection, key: int, start: int, end: int
    ) -> list[bytes]:
        """The payloads of batches start..end, from the job's chunks. The chunk being
        leased from stays decoded between leases (one per job, a few at most)."""
        first, _ = _batch_range(key)
        payloads: list[bytes] = []
        seq = start
        while seq <= end:
            cached = self._chunk_cache.get(key)
            if cached is None or not cached[0] < seq <= cached[0] + len(cached[1]):
                # The chunk holding `seq`: the last one that starts before it.
                (row,) = await self._rows(
                    db,
                    "SELECT id, payloads FROM chunks WHERE id BETWEEN ? AND ? "
                    "ORDER BY id DESC LIMIT 1",
                    first,
                    first + seq - 1,
                )
                cached = (row[0] - first, json.loads(row[1]))
                self._chunk_cache[key] = cached
                while len(self._chunk_cache) > CHUNK_CACHE_JOBS:
                    self._chunk_cache.pop(next(iter(self._chunk_cache)))
            offset, decoded = cached
            upto = min(end, offset + len(decoded))
            payloads += map(encode_payload, decoded[seq - offset - 1 : upto - offset])
            seq = upto + 1
        return payloads

    async def succeed(self, job_id: str, outcomes: Sequence[Success]) -> int:
        """Record successes; an outcome whose lease token is stale changes nothing.

        Group commit: successes reported while a commit is under way wait for the
        next one and share it, so a synchronous=FULL fsync is paid once per group,
        not once per batch. The caller returns only after its rows are durable.
        """
        key = await self._key(job_id)
        first, _ = _batch_range(key)
        rows = [(o.result, o.duration, first + o.seq, o.token) for o in outcomes if o.result]
        runs = _runs(first, [o for o in outcomes if not o.result])
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending_successes.append((key, rows, runs, done))
        if not self._committing:
            self._committing = True
            self._commit_task = asyncio.create_task(self._commit_successes(), name="group-commit")
        return await done

    async def _commit_successes(self) -> None:
        try:
            while self._pending_successes:
                group, self._pending_successes = self._pending_successes, []
                try:
                    async with self._transaction() as db:
                        accepted = [
                            await self._store_successes(db, key, rows, runs)
                            for key, rows, runs, _ in group
                        ]
                except Exception as exc:
                    for *_, done in group:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                for (*_, done), count in zip(group, accepted, strict=True):
                    if not done.done():
                        done.set_result(count)
        finally:
            self._committing = False

    async def _store_successes(
        self,
        db: aiosqlite.Connection,
        key: int,
        rows: list[tuple[bytes | None, float, int, int]],
        runs: list[tuple[float, int, int, int]],
    ) -> int:
        """Mark successes with a current lease token, and count the ones that were."""
        accepted, seconds = 0, 0.0
        if rows:
            # Which of them hold a current lease: the time of those only is counted.
            current = set(
                map(
                    tuple,
                    await self._rows(
                        db,
                        "SELECT id, lease_token FROM batches "
                        "WHERE id BETWEEN ? AND ? AND state = 'leased'",
                        min(row[2] for row in rows),
                        max(row[2] for row in rows),
                    ),
                )
            )
            seconds = sum(row[1] for row in rows if (row[2], row[3]) in current)
            accepted = await self._exec_many(db, _SUCCEED_ONE, rows)
        for run in runs:
            marked = await self._exec(db, _SUCCEED_RUN, *run)
            accepted += marked
            seconds += run[0] * marked
        if accepted:
            await _count(db, key, leased=-accepted, succeeded=accepted, seconds=seconds)
        return accepted

    async def fail(
        self, job_id: str, failure: Failure, max_receive_count: int
    ) -> BatchState | None:
        """Record a failed attempt; the batch is re-queued or, out of attempts, dead-lettered.

        Returns the batch's new state, or None when the lease token was stale."""
        first, _ = _batch_range(await self._key(job_id))
        batch = first + failure.seq
        async with self._transaction() as db:
            async with db.execute(
                "UPDATE batches SET state = CASE WHEN attempts >= ? THEN 'dead' ELSE 'queued' END, "
                "lease_token = NULL, lease_expires_at = NULL "
                "WHERE id = ? AND state = 'leased' AND lease_token = ? RETURNING state, attempts",
                (max_receive_count, batch, failure.token),
            ) as cursor:
                row = await cursor.fetchone()
            if row is None:
                return None
            dead = row[0] == BatchState.DEAD
            await _count(db, batch >> _SEQ_BITS, leased=-1, queued=1 - dead, dead=dead, failures=1)
            await self._exec(
                db,
                "INSERT INTO failures (batch, attempt, error, traceback, failed_at) "
                "VALUES (?,?,?,?,?)",
                batch,
                row[1],
                failure.error,
                failure.traceback,
                time.time(),
            )
        return BatchState(row[0])

    async def release(self, job_id: str, leases: Sequence[tuple[int, int]]) -> int:
        """Give (seq, token) leases back without burning an attempt: never started."""
        key = await self._key(job_id)
        first, _ = _batch_range(key)
        async with self._transaction() as db:
            released = await self._exec_many(
                db,
                "UPDATE batches SET state = 'queued', attempts = attempts - 1, "
                "lease_token = NULL, lease_expires_at = NULL "
                "WHERE id = ? AND state = 'leased' AND lease_token = ?",
                [(first + seq, token) for seq, token in leases],
            )
            if released:
                await _count(db, key, queued=released, leased=-released)
        return released

    async def renew(self, leases: Sequence[tuple[str, int, int]], lease_timeout: float) -> int:
        """Push out the expiry of (job_id, seq, token) leases held by live workers."""
        expires = time.time() + lease_timeout
        rows = [
            (expires, (await self._key(job_id) << _SEQ_BITS) + seq, token)
            for job_id, seq, token in leases
        ]
        async with self._transaction() as db:
            return await self._exec_many(
                db,
                "UPDATE batches SET lease_expires_at = ? "
                "WHERE id = ? AND state = 'leased' AND lease_token = ?",
                rows,
            )

    async def expire_leases(
        self,
        now: float,
        reason: str = "lease expired: the worker holding it was lost",
        job_ids: Sequence[str] | None = None,
    ) -> list[tuple[str, int, BatchState]]:
        """Every lease past its expiry counts as a failed attempt (its worker is gone).

        Only unfinished jobs hold leases (a job's end gives its leases back); `job_ids`
        narrows the search further. Leased batches are found by each job's id range, not
        an index, so the usual path of a batch touches no index."""
        wanted = None if job_ids is None else set(job_ids)
        expired: list[tuple[str, int, BatchState]] = []
        async with self._transaction() as db:
            active = await self._rows(
                db,
                "SELECT key, job_id, max_receive_count FROM jobs "
                "WHERE status IN ('pending', 'enqueuing', 'running') AND leased_count > 0",
            )
            for key, job_id, max_receive_count in active:
                if wanted is not None and job_id not in wanted:
                    continue
                first, last = _batch_range(key)
                async with db.execute(
                    "UPDATE batches SET state = CASE WHEN attempts >= ? THEN 'dead' "
                    "ELSE 'queued' END, lease_token = NULL, lease_expires_at = NULL "
                    "WHERE id BETWEEN ? AND ? AND state = 'leased' AND lease_expires_at < ? "
                    "RETURNING id, state, attempts",
                    (max_receive_count, first, last, now),
                ) as cursor:
                    rows = list(await cursor.fetchall())
                if not rows:
                    continue
                await self._exec_many(
                    db,
                    "INSERT INTO failures (batch, attempt, error, traceback, failed_at) "
                    "VALUES (?, ?, ?, NULL, ?)",
                    [(row[0], row[2], reason, time.time()) for row in rows],
                )
                dead = sum(row[1] == BatchState.DEAD for row in rows)
                await _count(
                    db,
                    key,
                    leased=-len(rows),
                    queued=len(rows) - dead,
                    dead=dead,
                    failures=len(rows),
                )
                expired += [(job_id, _seq(row[0]), BatchState(row[1])) for row in rows]
        return expired

    async def prunable_jobs(self, ended_before: float) -> list[JobRecord]:
        sql = (
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE status IN ({_TERMINAL_SQL}) "
            "AND end_time < ? AND pruned_at IS NULL ORDER BY end_time"
        )
        return [_job(row) for row in await self._rows(self._r, sql, ended_before)]

    async def prune_job(self, job_id: str) -> int:
        """Delete a finished job's batches and failures, a chunk per transaction so the
        write lock is never held for long; the job's own row stays, marked pruned."""
        first, last = _batch_range(await self._key(job_id))
        deleted = 0
        while True:
            async with self._transaction() as db:
                removed = await self._exec(
                    db,
                    "DELETE FROM batches WHERE id IN "
                    "(SELECT id FROM batches WHERE id BETWEEN ? AND ? LIMIT ?)",
                    first,
                    last,
                    PRUNE_CHUNK_ROWS,
                )
                removed += await self._exec(
                    db,
                    "DELETE FROM failures WHERE rowid IN "
                    "(SELECT rowid FROM failures WHERE batch BETWEEN ? AND ? LIMIT ?)",
                    first,
                    last,
                    PRUNE_CHUNK_ROWS,
                )
                removed += await self._exec(
                    db, "DELETE FROM chunks WHERE id BETWEEN ? AND ?", first, last
                )
                if removed == 0:
                    await self._exec(
                        db,
                        "UPDATE jobs SET pruned_at = ? WHERE job_id = ? AND status IN "
                        f"({_TERMINAL_SQL})",
                        time.time(),
                        job_id,
                    )
            deleted += removed
            if removed == 0:
                return deleted

    async def reclaim_space(self, pages: int) -> int:
        """Return up to `pages` free pages to the file system; the number still free."""
        async with self._write_lock:
            async with self._w.execute(f"PRAGMA incremental_vacuum({int(pages)})") as cursor:
                await cursor.fetchall()
            return int(await self._scalar(self._w, "PRAGMA freelist_count"))

    async def dead_letters(self, job_id: str) -> AsyncIterator[DeadLetter]:
        sql = (
            "SELECT b.id, b.payload, b.attempts, f.error, f.traceback FROM batches b "
            "LEFT JOIN failures f ON f.batch = b.id AND f.attempt = b.attempts "
            "WHERE b.state = 'dead' AND b.id > ? AND b.id <= ? ORDER BY b.id LIMIT ?"
        )
        async for row in self._pages(job_id, sql):
            yield DeadLetter(_seq(row[0]), bytes(row[1]), row[2], row[3], row[4])

    async def results(self, job_id: str) -> AsyncIterator[Result]:
        sql = (
            "SELECT id, result FROM batches WHERE id > ? AND id <= ? "
            "AND state = 'succeeded' AND result IS NOT NULL ORDER BY id LIMIT ?"
        )
        async for row in self._pages(job_id, sql):
            yield Result(_seq(row[0]), bytes(row[1]))

    async def _pages(self, job_id: str, sql: str) -> AsyncIterator[Any]:
        """Rows of a job's batches a page at a time (keyset paging on the batch id), so a
        million results stream without holding a read snapshot or the lot in memory.
        `sql` takes (after_id, last_id, limit) and selects the id first."""
        first, last = _batch_range(await self._key(job_id))
        after = first - 1
        while True:
            rows = await self._rows(self._r, sql, after, last, STREAM_PAGE_ROWS)
            for row in rows:
                yield row
            if len(rows) < STREAM_PAGE_ROWS:
                return
            after = rows[-1][0]

    # -- listing pages (the dashboard) -------------------------------------------------

    async def list_jobs_page(
        self,
        api_names: Sequence[str],
        limit: int,
        before: str | None = None,
        active_only: bool = False,
    ) -> list[JobRecord]:
        """Newest first; `before` is the last job id of the previous page (ids sort by age)."""
        if not api_names:
            return []
        marks = ", ".join("?" for _ in api_names)
        sql = f"SELECT {_JOB_COLUMNS} FROM jobs WHERE api_name IN ({marks})"
        params: list[Any] = list(api_names)
        if before is not None:
            sql += " AND job_id < ?"
            params.append(before)
        if active_only:
            sql += " AND status IN ('pending', 'enqueuing', 'running')"
        sql += " ORDER BY job_id DESC LIMIT ?"
        params.append(limit)
        return [_job(row) for row in await self._rows(self._r, sql, *params)]


async def _count(
    db: aiosqlite.Connection,
    key: int,
    *,
    queued: int = 0,
    leased: int = 0,
    succeeded: int = 0,
    dead: int = 0,
    failures: int = 0,
    seconds: float = 0.0,
) -> None:
    """Move a job's batch counters, inside the transaction that moved its batches."""
    async with db.execute(
        "UPDATE jobs SET queued_count = queued_count + ?, leased_count = leased_count + ?, "
        "succeeded_count = succeeded_count + ?, dead_count = dead_count + ?, "
        "failure_count = failure_count + ?, duration_sum = duration_sum + ? WHERE key = ?",
        (queued, leased, succeeded, dead, failures, seconds, key),
    ):
        pass


class _NumberedChunks:
    """(id, payloads) rows of a job's chunks, counting the batches they hold on the way."""

    def __init__(self, first: int, chunks: Iterable[Chunk]) -> None:
        self._first = first
        self._chunks = chunks
        self.batches = 0

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        for chunk in self._chunks:
            yield self._first + self.batches, chunk.payloads
            self.batches += chunk.batches


def _has_sql(chunk: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in chunk.splitlines())
