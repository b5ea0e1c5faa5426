"""Keeping the files bounded, of the ``RetentionStore`` role (pruning finished jobs is
:class:`batchd.store.sqlroles.SqlPruning`)."""

from __future__ import annotations

from batchd.store.sqlite.core import SqliteCore
from batchd.store.sqlite.queries import SQL
from batchd.store.sqlroles import SqlPruning


class SqliteRetention(SqliteCore, SqlPruning):
    async def reclaim_space(self, pages: int) -> int:
        """Return up to `pages` free pages to the file system; the number still free."""
        async with self._write_lock:
            # A PRAGMA's argument cannot be bound: the one other SQL written in Python. It
            # frees a page per step, and its rows have no columns, so execute() would step
            # once (one page per call); executescript steps it to the end.
            await self._w.executescript(f"PRAGMA incremental_vacuum({int(pages)})")
            return int(await self._scalar(self._w, SQL.free_pages))

    async def checkpoint(self) -> None:
        """Copy the WAL into the database and truncate it, so it cannot grow without bound."""
        async with self._write_lock:
            await self._exec(self._w, SQL.checkpoint)
