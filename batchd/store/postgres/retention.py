"""Keeping the tables bounded, of the ``RetentionStore`` role (pruning finished jobs is
:class:`batchd.store.sqlroles.SqlPruning`)."""

from __future__ import annotations

from batchd.store.postgres.core import PostgresCore
from batchd.store.postgres.queries import SQL
from batchd.store.sqlroles import SqlPruning


class PostgresRetention(PostgresCore, SqlPruning):
    async def reclaim_space(self, pages: int) -> int:
        """Vacuum the tables pruning empties: their free space is reused, and empty pages
        at their ends go back to the file system. PostgreSQL frees no fixed number of
        pages, so one call does it all: nothing is left for a next step (0)."""
        # On a read connection, outside the write lock: this daemon's writes go on
        # meanwhile (the brief lock VACUUM takes to truncate gives way to them).
        try:
            await self._r.execute(SQL.vacuum)
        except Exception as exc:
            self._raise_if_lost(exc)
            raise
        return 0

    async def checkpoint(self) -> None:
        """Nothing to do: the server bounds its write-ahead log itself (max_wal_size)."""
