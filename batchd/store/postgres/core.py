"""What every role of the PostgreSQL store shares: the connections, the write
transaction, the migrations, a job's key and its counters.

As in the SQLite store, this daemon's writes go through one connection, one
transaction at a time under an asyncio lock, so its transactions never wait on each
other's row locks; reads go to a small pool and see the last commit. Several daemons
on one database are later work: what is here already is that leasing skips rows
another transaction holds (``FOR UPDATE SKIP LOCKED``) and migrations take an
advisory lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from batchd.store import DatabaseUnavailable
from batchd.store.postgres.queries import MIGRATIONS, SQL
from batchd.store.sqlcore import SqlCore

# Told how long a COMMIT took, in seconds.
OnCommit = Callable[[float], None]

SCHEMA_VERSION = len(MIGRATIONS)
# Reads at once: status requests, listings and result streams of this daemon.
READ_CONNECTIONS = 4


def _without_password(dsn: str) -> str:
    """The URL as it may be logged."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def rowcount(status: str) -> int:
    """The rows a command touched, from its status tag (``UPDATE 3``, ``INSERT 0 3``)."""
    return int(status.rpartition(" ")[2] or 0)


class PostgresCore(SqlCore[asyncpg.Connection, asyncpg.Pool]):
    """The connections and the write transaction; each role is a subclass."""

    _sql = SQL

    def __init__(self, dsn: str, on_commit: OnCommit | None = None) -> None:
        super().__init__()
        self.dsn = dsn
        # Told how long each COMMIT took, in seconds (the daemon feeds a histogram).
        self._on_commit = on_commit
        self._write_lock = asyncio.Lock()
        self._keys: dict[str, int] = {}

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        try:
            self._writer = await asyncpg.connect(self.dsn)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            where = _without_password(self.dsn)
            raise DatabaseUnavailable(f"cannot connect to {where}: {exc}") from None
        try:
            await self._migrate()
            self._reader = await asyncpg.create_pool(
                self.dsn, min_size=1, max_size=READ_CONNECTIONS
            )
        except BaseException:
            await self.close()
            raise

    async def _migrate(self) -> None:
        """Run the migrations after the database's version, all in one transaction,
        under an advisory lock: a daemon opening meanwhile waits, then finds them done."""
        async with self._w.transaction():
            await self._w.execute(SQL.migration_lock)
            await self._w.execute(SQL.create_version_table)
            version = await self._w.fetchval(SQL.schema_version)
            if version == SCHEMA_VERSION:
                return
            if not 0 <= version < SCHEMA_VERSION:
                raise RuntimeError(
                    f"the database has schema version {version}; this batchd knows {SCHEMA_VERSION}"
                )
            for _, script in MIGRATIONS[version:]:
                await self._w.execute(script)
            await self._w.execute(SQL.set_schema_version, SCHEMA_VERSION)

    @property
    def _latest(self) -> asyncpg.Pool:
        # Every commit is visible to the pool's next read.
        return self._r

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._write_lock:
            transaction = self._w.transaction()
            await transaction.start()
            try:
                yield self._w
            except BaseException:
                # A lost connection cannot roll back: the original error is the one to raise.
                with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                    await transaction.rollback()
                raise
            if self._on_commit is None:
                await transaction.commit()
            else:
                started = time.perf_counter()
                await transaction.commit()
                self._on_commit(time.perf_counter() - started)

    # -- statements --------------------------------------------------------------------

    @staticmethod
    async def _exec(db: asyncpg.Connection, sql: str, *params: Any) -> int:
        return rowcount(await db.execute(sql, *params))

    @staticmethod
    async def _rows(conn: asyncpg.Connection | asyncpg.Pool, sql: str, *params: Any) -> list[Any]:
        return await conn.fetch(sql, *params)

    @staticmethod
    async def _scalar(conn: asyncpg.Connection | asyncpg.Pool, sql: str, *params: Any) -> Any:
        return await conn.fetchval(sql, *params)

    async def _find_key(self, job_id: str) -> int | None:
        key = await self._r.fetchval(SQL.job_key, job_id)
        return None if key is None else int(key)

    @staticmethod
    def _stored_text(text: str | None) -> bytes | None:
        # As bytes (bytea): a NUL in a handler's message round-trips, as on SQLite.
        return None if text is None else text.encode()

    @staticmethod
    def _loaded_text(value: bytes | None) -> str | None:
        return None if value is None else value.decode()
