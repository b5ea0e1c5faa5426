"""Moving a SQLite state dir's queue to PostgreSQL (``batchd migrate``).

What moves: every deployed API version (deleted ones too: a moved job may name one), and
every unfinished job with its batch rows, chunks and failures. Finished jobs stay in the
SQLite file, where a SQLite daemon on the state dir still serves their results. A job's
key is new on PostgreSQL, so the ids that pack it (batches, chunks, failures: key << 32
| seq) move with it; a leased batch becomes queued with its attempt refunded, since no
worker holds it after the move; a job's counters are recounted from the rows it moves.

Everything is written in one PostgreSQL transaction, by COPY: a failure leaves the
database as it was, a second run over the same queue is refused (nothing is ever merged
into what the database holds already), and a million batches move in seconds. The SQLite
file is only read, in one read transaction; the caller holds the state dir's daemon
lock, so nothing writes to it meanwhile.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from batchd.constants import SCHEMA_VERSION
from batchd.store import DatabaseUnavailable
from batchd.store.postgres.queries import SQL as PG_SQL
from batchd.store.postgres.store import PostgresStore
from batchd.store.records import ApiRecord
from batchd.store.rows import SEQ_BITS, api_record, batch_range
from batchd.store.sqlite.queries import SQL as SQLITE_SQL

# The project archive of a live API version (None: it cannot have one), as a database
# that keeps archives stores it beside the version's row.
ArchiveOf = Callable[[ApiRecord], bytes | None]

# A refusal names at most this many jobs or APIs.
NAMES_SHOWN = 5


class Refused(Exception):
    """The move cannot be made as things stand; the message is the one line to print."""


@dataclass
class Moved:
    """What one run moved, and what it left."""

    apis: list[str] = field(default_factory=list)
    versions: int = 0
    archive_bytes: int = 0
    jobs: list[str] = field(default_factory=list)
    # Batches of the moved jobs, and how they stand: queued (never leased ones and
    # refunded leases included), succeeded, dead; failed attempts recorded.
    batches: int = 0
    queued: int = 0
    refunded: int = 0
    succeeded: int = 0
    dead: int = 0
    failures: int = 0
    finished_left: int = 0


async def migrate(source: Path, dsn: str, archive_of: ArchiveOf) -> Moved:
    """Move the queue of the SQLite file `source` to the PostgreSQL database at `dsn`."""
    with _reading(source) as sqlite:
        versions = sqlite.execute(SQLITE_SQL.migrated_api_versions).fetchall()
        jobs = sqlite.execute(SQLITE_SQL.migrated_jobs).fetchall()
        moved = Moved(
            apis=sorted({row[0] for row in versions}),
            versions=len(versions),
            jobs=[row[1] for row in jobs],
            finished_left=sqlite.execute(SQLITE_SQL.finished_job_count).fetchone()[0],
        )
        # Opened once, as a daemon would: the schema is created, or brought up to date.
        store = PostgresStore(dsn)
        try:
            await store.open()
        except RuntimeError as exc:
            # A schema newer than this batchd's.
            raise Refused(str(exc)) from None
        await store.close()
        target = await _connect(dsn)
        try:
            async with target.transaction():
                await _refuse_overlap(target, moved)
                moved.archive_bytes = await _copy_apis(target, sqlite, versions, archive_of)
                await _copy_jobs(target, sqlite, jobs, moved)
        finally:
            await target.close()
    return moved


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[sqlite3.Connection]:
    """The file read-only, in one read transaction. With no write-ahead log (the daemon
    stopped cleanly) it is opened immutable, so that reading it leaves no -wal or -shm
    file behind (one owned by another user would stop the daemon's user opening it)."""
    wal = path.with_name(path.name + "-wal")
    mode = "mode=ro" if wal.exists() else "mode=ro&immutable=1"
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?{mode}", uri=True)
    try:
        connection.isolation_level = None
        version = connection.execute(SQLITE_SQL.schema_version).fetchone()[0]
        if version != SCHEMA_VERSION:
            raise Refused(
                f"{path} has schema version {version}, this batchd moves version "
                f"{SCHEMA_VERSION}: run this batchd's daemon on the state dir once first"
            )
        connection.execute(SQLITE_SQL.begin_reading)
        yield connection
    finally:
        connection.close()


async def _connect(dsn: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # The URL may hold a password: the message does not repeat it.
        raise DatabaseUnavailable(f"cannot connect to the database: {exc}") from None


def _listed(what: str, names: list[str]) -> str:
    shown = ", ".join(names[:NAMES_SHOWN])
    more = f" and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else ""
    return f"{what} {shown}{more}"


async def _refuse_overlap(target: asyncpg.Connection, moved: Moved) -> None:
    apis = [row[0] for row in await target.fetch(PG_SQL.apis_already_here, moved.apis)]
    jobs = [row[0] for row in await target.fetch(PG_SQL.jobs_already_here, moved.jobs)]
    if apis or jobs:
        held = [_listed("API", apis)] if apis else []
        held += [_listed("job", jobs)] if jobs else []
        raise Refused(
            f"the database already holds {' and '.join(held)}: nothing was moved "
            "(batchd migrate never merges two queues; moved already?)"
        )


def _columns(names: str) -> list[str]:
    return [name.strip() for name in names.split(",")]


async def _copy_apis(
    target: asyncpg.Connection,
    sqlite: sqlite3.Connection,
    versions: list[Any],
    archive_of: ArchiveOf,
) -> int:
    """Copy every version and the APIs' pauses; the bytes of the live ones' archives."""
    await target.copy_records_to_table(
        "apis", records=versions, columns=_columns(PG_SQL.migrated_api_columns)
    )
    await target.copy_records_to_table(
        "paused_apis",
        records=sqlite.execute(SQLITE_SQL.migrated_paused_apis).fetchall(),
        columns=_columns(PG_SQL.migrated_paused_api_columns),
    )
    archive_bytes = 0
    for row in versions:
        if row[5] is None:
            api = api_record(row)
            archive = archive_of(api)
            if archive is not None:
                await target.execute(
                    PG_SQL.insert_api_archive, api.name, api.spec["digest"], archive
                )
                archive_bytes += len(archive)
    return archive_bytes


async def _copy_jobs(
    target: asyncpg.Connection, sqlite: sqlite3.Connection, jobs: list[Any], moved: Moved
) -> None:
    """Copy the jobs under new keys, then all their batches, chunks and failures."""
    keys = [row[0] for row in await target.fetch(PG_SQL.reserve_job_keys, len(jobs))]
    job_rows: list[tuple[Any, ...]] = []
    # (how far the ids move, the job's first and last id in the SQLite file) per job.
    ranges: list[tuple[int, int, int]] = []
    for job, key in zip(jobs, keys, strict=True):
        first, last = batch_range(job[0])
        ranges.append(((key - job[0]) << SEQ_BITS, first, last))
        queued, refunded, succeeded, dead, seconds = sqlite.execute(
            SQLITE_SQL.batch_tally, (first, last)
        ).fetchone()
        failures = sqlite.execute(SQLITE_SQL.failure_tally, (first, last)).fetchone()[0]
        total, materialized = job[12], job[19]
        # Batches past `materialized` have no row yet: they wait in the chunks.
        queued += total - materialized
        has_on_complete = None if job[16] is None else bool(job[16])
        counters = (queued, 0, succeeded, dead, failures, seconds)
        job_rows.append((key, *job[1:16], has_on_complete, *job[17:], *counters))
        moved.batches += total
        moved.queued += queued
        moved.refunded += refunded
        moved.succeeded += succeeded
        moved.dead += dead
        moved.failures += failures
    await target.copy_records_to_table(
        "jobs", records=job_rows, columns=_columns(PG_SQL.migrated_job_columns)
    )
    for table, read, columns in (
        ("batches", SQLITE_SQL.migrated_batches, PG_SQL.migrated_batch_columns),
        ("chunks", SQLITE_SQL.migrated_chunks, PG_SQL.migrated_chunk_columns),
        ("failures", SQLITE_SQL.migrated_failures, PG_SQL.migrated_failure_columns),
    ):
        # Streamed: the rows go from the SQLite file to the COPY a buffer at a time.
        await target.copy_records_to_table(
            table, records=_rows_of(sqlite, read, ranges), columns=_columns(columns)
        )


def _rows_of(
    sqlite: sqlite3.Connection, read: str, ranges: Iterable[tuple[int, int, int]]
) -> Iterator[Any]:
    for moved_by, first, last in ranges:
        yield from sqlite.execute(read, (moved_by, first, last))
