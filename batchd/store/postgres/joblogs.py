"""The job log table of a shared database: the lines of every node's workers, in one
order, readable from any node. Its own connections, never the store's writer: writing
logs neither waits for nor holds up the queue's transactions.

What a line is, buffering, following and filters are :mod:`batchd.observe.pglogs`'s.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from batchd.store import DatabaseUnavailable
from batchd.store.postgres.core import SERVER_SETTINGS, rowcount
from batchd.store.postgres.queries import SQL

# Reads at once: `GET logs` streams, each a query per poll.
READ_CONNECTIONS = 2
# Lines deleted per transaction when a job is pruned.
DELETE_CHUNK_ROWS = 5000
# What says the server cannot be used now (rather than that a statement is wrong).
UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
)


@asynccontextmanager
async def _available() -> AsyncIterator[None]:
    try:
        yield
    except UNAVAILABLE as exc:
        raise DatabaseUnavailable(f"job logs: {exc!r}") from None


class JobLogTable:
    """`insert` on a connection of its own (one flusher calls it), reads on a small pool."""

    def __init__(self, dsn: str, node: str) -> None:
        self.dsn = dsn
        self.node = node
        self._writer: asyncpg.Connection | None = None
        self._readers: asyncpg.Pool | None = None

    async def open(self) -> None:
        # Connects on first use: the store has just reached the server.
        self._readers = await asyncpg.create_pool(
            self.dsn, min_size=0, max_size=READ_CONNECTIONS, server_settings=SERVER_SETTINGS
        )

    async def close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(*UNAVAILABLE, asyncpg.PostgresError):
                await self._writer.close(timeout=5)
            self._writer = None
        if self._readers is not None:
            with contextlib.suppress(*UNAVAILABLE, asyncpg.PostgresError):
                await self._readers.close()

    @property
    def _pool(self) -> asyncpg.Pool:
        assert self._readers is not None, "the job log table is not open"
        return self._readers

    async def insert(self, lines: Sequence[tuple[str, bytes]]) -> int:
        """Append (job id, line) pairs in their order, in one transaction; the lines of a
        job that has no row are left out. Returns how many were stored. A lost connection
        raises DatabaseUnavailable, and the next call connects again."""
        try:
            if self._writer is None or self._writer.is_closed():
                self._writer = await asyncpg.connect(self.dsn, server_settings=SERVER_SETTINGS)
            return await self._insert(self._writer, lines)
        except UNAVAILABLE as exc:
            writer, self._writer = self._writer, None
            if writer is not None:
                writer.terminate()
            raise DatabaseUnavailable(f"job logs: {exc!r}") from None

    async def _insert(self, db: asyncpg.Connection, lines: Sequence[tuple[str, bytes]]) -> int:
        async with db.transaction():
            job_ids = sorted({job_id for job_id, _ in lines})
            keys = {row[0]: row[1] for row in await db.fetch(SQL.lock_job_logs, job_ids)}
            records = [(keys[job_id], self.node, line) for job_id, line in lines if job_id in keys]
            if records:
                await db.copy_records_to_table(
                    "job_logs", records=records, columns=("job", "node", "line")
                )
        return len(records)

    async def lines(self, job_id: str, start: int, rows: int, size: int) -> list[tuple[int, bytes]]:
        """The job's (id, line) pairs from id `start` on: at most `rows`, and past the
        first at most `size` bytes of lines."""
        async with _available():
            found: list[Any] = await self._pool.fetch(SQL.job_log_lines, job_id, start, rows, size)
        return [(row[0], row[1]) for row in found]

    async def tail_start(self, job_id: str, lines: int) -> int:
        """The id where the job's last `lines` lines start (0: it has no more than that)."""
        async with _available():
            first = await self._pool.fetchval(SQL.job_log_tail, job_id, lines)
        return 0 if first is None else int(first)

    async def size(self, job_id: str) -> int:
        async with _available():
            return int(await self._pool.fetchval(SQL.job_log_size, job_id))

    async def delete(self, job_id: str) -> int:
        """Delete the job's lines, a chunk per transaction; returns how many."""
        deleted = 0
        async with _available():
            while removed := rowcount(
                await self._pool.execute(SQL.delete_job_logs, job_id, DELETE_CHUNK_ROWS)
            ):
                deleted += removed
        return deleted
