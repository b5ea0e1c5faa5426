"""What every role of the SQLite store shares: the connections, the write transaction,
the migrations, a job's key and its counters (rows become records in ``batchd.store.rows``).

One writer connection, every write an explicit ``BEGIN IMMEDIATE`` transaction under
an asyncio lock (aiosqlite runs each statement in its own thread, so a transaction
spanning several awaits must not interleave with another). A second connection
serves reads, so status requests are answered from the last committed state while
a large job is being admitted.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from batchd.constants import SCHEMA_VERSION, WAL_SIZE_LIMIT
from batchd.store.sqlcore import SqlCore
from batchd.store.sqlite.queries import MIGRATIONS, SQL

# Told how long a COMMIT took, in seconds.
OnCommit = Callable[[float], None]

if len(MIGRATIONS) != SCHEMA_VERSION:
    raise RuntimeError(f"{len(MIGRATIONS)} migrations for schema version {SCHEMA_VERSION}")

_BEGIN, _COMMIT, _ROLLBACK = SQL.begin_immediate, SQL.commit, SQL.rollback


class SqliteCore(SqlCore[aiosqlite.Connection, aiosqlite.Connection]):
    """The connections and the write transaction; each role is a subclass."""

    _sql = SQL

    def __init__(
        self, path: Path, synchronous: str = "full", on_commit: OnCommit | None = None
    ) -> None:
        super().__init__()
        self.path = path
        self.synchronous = synchronous.upper()
        # Told how long each COMMIT took, in seconds (the daemon feeds a histogram).
        self._on_commit = on_commit
        self._write_lock = asyncio.Lock()
        self._keys: dict[str, int] = {}

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
            # The PRAGMAs with values: the only SQL written in Python.
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
        """Run the migrations after the database's version, all in one transaction."""
        version = await self._scalar(self._w, SQL.schema_version)
        if version == SCHEMA_VERSION:
            return
        if not 0 <= version < SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path} has schema version {version}; this batchd knows {SCHEMA_VERSION}"
            )
        async with self._transaction() as db:
            for _, statements in MIGRATIONS[version:]:
                for statement in statements:
                    await self._exec(db, statement)
            await self._exec(db, f"PRAGMA user_version={SCHEMA_VERSION}")

    @property
    def _latest(self) -> aiosqlite.Connection:
        return self._w

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._write_lock:
            await self._exec(self._w, _BEGIN)
            try:
                yield self._w
            except BaseException:
                # SQLite may have rolled back already (disk full does); the original
                # error is the one worth raising.
                if self._w.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        await self._exec(self._w, _ROLLBACK)
                raise
            if self._on_commit is None:
                await self._exec(self._w, _COMMIT)
            else:
                started = time.perf_counter()
                await self._exec(self._w, _COMMIT)
                self._on_commit(time.perf_counter() - started)

    # -- statements --------------------------------------------------------------------

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

    async def _find_key(self, job_id: str) -> int | None:
        key = await self._scalar(self._r, SQL.job_key, job_id)
        if key is None:
            # Committed a moment ago, perhaps: the reader's snapshot may be older.
            key = await self._scalar(self._w, SQL.job_key, job_id)
        return None if key is None else int(key)
