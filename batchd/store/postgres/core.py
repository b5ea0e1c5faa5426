"""What every role of the PostgreSQL store shares: the connections, the write
transaction, the migrations, a job's key and its counters.

As in the SQLite store, this daemon's writes go through one connection, one
transaction at a time under an asyncio lock, so its transactions never wait on each
other's row locks; reads go to a small pool and see the last commit. Several daemons
on one database are later work: what is here already is that leasing skips rows
another transaction holds (``FOR UPDATE SKIP LOCKED``) and migrations take an
advisory lock.

The server may restart or fail over under a running daemon. A connection lost or
refused is :class:`batchd.store.DatabaseUnavailable`, never the driver's own error: a
write under way when it went is rolled back, or (lost during its COMMIT) committed in
full (see DatabaseUnavailable for what may be repeated). What a call sees:

- while the server is down, DatabaseUnavailable; a write within the reconnect backoff
  (RECONNECT_FIRST doubling to RECONNECT_MOST after each refused try) fails at once,
  without trying the server;
- once it is back, the next call succeeds on a new connection when the loss was seen
  while idle (the server tells its sessions it is going); a call that meets the loss
  itself (mid-statement, or before the event loop saw it) raises DatabaseUnavailable,
  and the call after it connects again. The store is never reopened: the writer is
  replaced on the next write, the read pool replaces a dead connection when next used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from batchd.store import DatabaseUnavailable
from batchd.store.postgres.queries import MIGRATIONS, SQL
from batchd.store.sqlcore import SqlCore

log = logging.getLogger("batchd.store")

# Told how long a COMMIT took, in seconds.
OnCommit = Callable[[float], None]

SCHEMA_VERSION = len(MIGRATIONS)
# Reads at once: status requests, listings and result streams of this daemon.
READ_CONNECTIONS = 4
# Seconds between tries to connect again: doubling from the first to the most.
RECONNECT_FIRST = 0.5
RECONNECT_MOST = 5.0
# A connection attempt that hangs (an unreachable host) holds every write up: bounded.
CONNECT_TIMEOUT = 10.0
# A lease token is its node's id above TOKEN_BITS random bits.
TOKEN_BITS = 40
# A session idle inside a transaction this long is ended by the server: a node stopped or
# cut off mid-transaction must not hold the rows it locked (a job's row, say) and stall
# every other node. Ours never idle there for more than an event-loop turn.
SERVER_SETTINGS = {"idle_in_transaction_session_timeout": "5s"}


# What a rollback on a lost connection raises, instead of rolling back.
_ROLLBACK_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    OSError,
)


# Another transaction was in the way (two nodes' writes): rolled back, worth repeating.
_RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)


def _without_password(dsn: str) -> str:
    """The URL as it may be logged."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def node_tokens(node: int) -> tuple[int, int]:
    """The lowest and highest lease token of a node."""
    lowest = node << TOKEN_BITS
    return lowest, lowest | ((1 << TOKEN_BITS) - 1)


def rowcount(status: str) -> int:
    """The rows a command touched, from its status tag (``UPDATE 3``, ``INSERT 0 3``)."""
    return int(status.rpartition(" ")[2] or 0)


def connection_lost(exc: BaseException) -> bool:
    """Whether `exc` says the connection is gone or refused, not that a statement failed:
    a socket error, SQLSTATE class 08 (connection exception) or 57P0x (the server
    shutting down, crashed, starting up, or the database dropped)."""
    if isinstance(exc, (OSError, asyncpg.PostgresConnectionError, DatabaseUnavailable)):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        return str(exc.sqlstate).startswith("57P")
    if isinstance(exc, asyncpg.exceptions.InternalClientError):
        # A connection idle when the server cut it, having read the server's farewell
        # but not yet its end, waits for an answer that never comes: every call on it
        # raises this ("another operation is in progress").
        return True
    # asyncpg's word for a connection that closed under the caller.
    return isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc)


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
        # After a failed connection attempt: no other before this (monotonic) time.
        self._reconnect_at = 0.0
        self._reconnect_delay = RECONNECT_FIRST
        self._last_refusal = ""
        # One warning when an outage begins, one line when it ends: not one per call.
        self._outage = False
        # This daemon's row among the nodes (0 until it joins): the high bits of its tokens.
        self.node_id = 0

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        self._writer = await self._connect()
        try:
            await self._migrate()
            # No floor of connections: asyncpg would restore one in the background
            # through an outage, logging each failure. One is opened now and kept
            # (none ever expires); the pool replaces a lost one when it is next used.
            self._reader = await asyncpg.create_pool(
                self.dsn,
                min_size=0,
                max_size=READ_CONNECTIONS,
                max_inactive_connection_lifetime=0,
                timeout=CONNECT_TIMEOUT,
                server_settings=SERVER_SETTINGS,
            )
            await self.ping()
        except BaseException as exc:
            await self.close()
            if isinstance(exc, Exception):
                self._raise_if_lost(exc)
            raise

    async def _connect(self) -> asyncpg.Connection:
        try:
            return await asyncpg.connect(
                self.dsn, timeout=CONNECT_TIMEOUT, server_settings=SERVER_SETTINGS
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            where = _without_password(self.dsn)
            raise DatabaseUnavailable(f"cannot connect to {where}: {exc}") from None

    async def _reconnect(self) -> asyncpg.Connection:
        """A new writer connection for one that was lost; within the backoff after a
        failed attempt, DatabaseUnavailable at once (the server is not hammered)."""
        wait = self._reconnect_at - time.monotonic()
        if wait > 0:
            raise DatabaseUnavailable(
                f"{self._last_refusal}; trying again in {wait:.1f}s", retry_after=wait
            )
        try:
            writer = await self._connect()
        except DatabaseUnavailable as exc:
            delay = self._reconnect_delay
            self._reconnect_at = time.monotonic() + delay
            self._reconnect_delay = min(delay * 2, RECONNECT_MOST)
            self._last_refusal = str(exc)
            exc.retry_after = delay
            raise self._unavailable(exc) from None
        self._writer, self._reconnect_delay = writer, RECONNECT_FIRST
        if self._outage:
            self._outage = False
            log.info("connected to the database again", extra={"database": self._where})
        return writer

    async def _lock_api_versions(self, db: Any, name: str) -> None:
        # Two nodes deploying one API at once would both number it max + 1 (a 500 for the
        # second): the second waits, then reads the first's version.
        await db.execute(SQL.lock_api_versions, name)

    def _new_token(self) -> int:
        return (self.node_id << TOKEN_BITS) | secrets.randbits(TOKEN_BITS)

    def _own_tokens(self) -> tuple[int, int]:
        return node_tokens(self.node_id)

    @property
    def _where(self) -> str:
        return _without_password(self.dsn)

    def _unavailable(self, exc: Exception) -> DatabaseUnavailable:
        """DatabaseUnavailable for a lost or refused connection, told the log once an outage."""
        if not isinstance(exc, DatabaseUnavailable):
            exc = DatabaseUnavailable(f"lost the connection to {self._where}: {exc}")
        if not self._outage:
            self._outage = True
            log.warning("the database is unavailable", extra={"error": str(exc)})
        return exc

    def _raise_if_lost(self, exc: Exception, writer: asyncpg.Connection | None = None) -> None:
        """Raise DatabaseUnavailable when `exc` says the connection is lost (the writer's,
        when given, is dropped: the next write connects again); else return, for the
        caller to raise `exc` itself."""
        if not connection_lost(exc):
            return
        if writer is not None:
            writer.terminate()
        unavailable = self._unavailable(exc)
        if unavailable is exc:
            raise unavailable
        raise unavailable from exc

    async def ping(self) -> None:
        """One round trip on the read pool (which reconnects if it must)."""
        await self._scalar(self._r, SQL.ping)

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
            writer = self._w
            if writer.is_closed():
                writer = await self._reconnect()
            try:
                transaction = writer.transaction()
                await transaction.start()
                try:
                    yield writer
                except BaseException:
                    # A lost connection cannot roll back: the original error is the one to raise.
                    with contextlib.suppress(*_ROLLBACK_ERRORS):
                        await transaction.rollback()
                    raise
                if self._on_commit is None:
                    await transaction.commit()
                else:
                    started = time.perf_counter()
                    await transaction.commit()
                    self._on_commit(time.perf_counter() - started)
            except Exception as exc:
                # Lost during the COMMIT, the transaction's outcome is unknown: a retry
                # is safe (see DatabaseUnavailable).
                self._raise_if_lost(exc, writer)
                if isinstance(exc, _RETRYABLE):
                    # Rolled back whole; the same write again will go through.
                    raise DatabaseUnavailable(f"{exc}; try again", retry_after=0.1) from exc
                raise

    # -- statements --------------------------------------------------------------------

    @staticmethod
    async def _exec(db: asyncpg.Connection, sql: str, *params: Any) -> int:
        return rowcount(await db.execute(sql, *params))

    # Reads run on the pool, whose connections may be lost: each says so as unavailability.
    async def _rows(
        self, conn: asyncpg.Connection | asyncpg.Pool, sql: str, *params: Any
    ) -> list[Any]:
        try:
            return await conn.fetch(sql, *params)
        except Exception as exc:
            self._raise_if_lost(exc)
            raise

    async def _scalar(self, conn: asyncpg.Connection | asyncpg.Pool, sql: str, *params: Any) -> Any:
        try:
            return await conn.fetchval(sql, *params)
        except Exception as exc:
            self._raise_if_lost(exc)
            raise

    async def _find_key(self, job_id: str) -> int | None:
        key = await self._scalar(self._r, SQL.job_key, job_id)
        return None if key is None else int(key)

    @staticmethod
    def _stored_text(text: str | None) -> bytes | None:
        # As bytes (bytea): a NUL in a handler's message round-trips, as on SQLite.
        return None if text is None else text.encode()

    @staticmethod
    def _loaded_text(value: bytes | None) -> str | None:
        return None if value is None else value.decode()
