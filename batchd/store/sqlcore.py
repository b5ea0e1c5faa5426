"""What the store's roles shared by both SQL backends (:mod:`batchd.store.sqlroles`) ask
of a backend's core, and the little they share of it: the connections' properties and
closing, a job's key (cached) and moving its counters. A backend's core subclasses
:class:`SqlCore` with its driver's connection types and supplies its statements
(``_sql``, named as in its ``sql/*.sql``), its write transaction and its statement
runners."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from batchd.store.rows import UnknownJob
from batchd.store.sqlfiles import Statements


class _Closes(Protocol):
    async def close(self) -> None: ...


Writer = TypeVar("Writer", bound=_Closes)
Reader = TypeVar("Reader", bound=_Closes)


class SqlCore(Generic[Writer, Reader]):
    """What the shared roles ask of a backend's core, over its writer connection and its
    reader (a connection or a pool)."""

    _sql: ClassVar[Statements]
    _keys: dict[str, int]

    def __init__(self) -> None:
        self._writer: Writer | None = None
        self._reader: Reader | None = None

    async def close(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    async def ping(self) -> None:
        """A database file on this box: nothing to reach (a server's store checks)."""

    @property
    def _w(self) -> Writer:
        assert self._writer is not None, "store is not open"
        return self._writer

    @property
    def _r(self) -> Reader:
        """Reads of the last committed state."""
        assert self._reader is not None, "store is not open"
        return self._reader

    @property
    def _latest(self) -> Any:
        """Reads that must include this daemon's last commit."""
        raise NotImplementedError

    def _transaction(self) -> AbstractAsyncContextManager[Any]:
        raise NotImplementedError

    # Methods, not static: the PostgreSQL store's notice an outage (see its core).
    async def _rows(self, conn: Any, sql: str, *params: Any) -> list[Any]:
        raise NotImplementedError

    async def _scalar(self, conn: Any, sql: str, *params: Any) -> Any:
        """The first column of the first row; None without one."""
        raise NotImplementedError

    @staticmethod
    async def _exec(conn: Any, sql: str, *params: Any) -> int:
        """Run a statement; the rows it touched."""
        raise NotImplementedError

    async def _find_key(self, job_id: str) -> int | None:
        raise NotImplementedError

    def _new_token(self) -> int:
        """A fresh lease token: an outcome under any other token changes nothing."""
        return secrets.randbits(62)

    async def _lock_api_versions(self, db: Any, name: str) -> None:
        """Hold the API's version numbering to the end of the transaction, where another
        daemon could number a version at once (one daemon's writes are serial already)."""

    def _own_tokens(self) -> tuple[Any, ...]:
        """What narrows lease expiry to this daemon's own tokens, as the statement binds
        it: nothing where no other daemon leases from the queue."""
        return ()

    @staticmethod
    def _stored_text(text: str | None) -> Any:
        """An error or traceback as its column holds it."""
        return text

    @staticmethod
    def _loaded_text(value: Any) -> str | None:
        return value  # type: ignore[no-any-return]

    async def _key(self, job_id: str) -> int:
        """The job's key, which its batch ids pack (cached: a key never changes)."""
        key = self._keys.get(job_id)
        if key is None:
            key = await self._find_key(job_id)
            if key is None:
                raise UnknownJob(job_id)
            self._keys[job_id] = key
        return int(key)

    def _count(
        self,
        db: Any,
        key: int,
        *,
        queued: int = 0,
        leased: int = 0,
        succeeded: int = 0,
        dead: int = 0,
        failures: int = 0,
        seconds: float = 0.0,
    ) -> Awaitable[int]:
        """Move a job's batch counters, inside the transaction that moved its batches
        (the statement's own awaitable: no coroutine of its own in between)."""
        moves = (queued, leased, succeeded, dead, failures, seconds, key)
        return self._exec(db, self._sql.move_counters, *moves)
