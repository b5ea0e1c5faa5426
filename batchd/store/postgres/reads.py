"""Reading (the ``ReadStore`` role, in :class:`batchd.store.sqlroles.SqlReads`): here what
is PostgreSQL's own. Reads go to the reader pool: the last committed state, never
waiting for a write."""

from __future__ import annotations

from collections.abc import Sequence

from batchd.store.postgres.core import PostgresCore
from batchd.store.postgres.queries import SQL
from batchd.store.records import BatchCounts
from batchd.store.rows import batch_counts
from batchd.store.sqlhistory import SqlHistory
from batchd.store.sqlroles import SqlReads


class PostgresReads(PostgresCore, SqlReads, SqlHistory):
    def _page_params(
        self, api_names: Sequence[str], before: str | None
    ) -> tuple[list[str], str | None]:
        """`before` is NULL for a first page (job ids sort by byte: COLLATE "C")."""
        return list(api_names), before

    def _array(self, values: Sequence[str]) -> list[str]:
        return list(values)

    async def counts(self, job_id: str) -> BatchCounts:
        """One row, so one snapshot."""
        key = await self._key(job_id)
        # Inline, not through a helper: a status read's one round trip gets no extra frame.
        try:
            row = await self._r.fetchrow(SQL.job_counts, key)
        except Exception as exc:
            self._raise_if_lost(exc)
            raise
        assert row is not None, "a job's row outlives its key"
        return batch_counts(row)
