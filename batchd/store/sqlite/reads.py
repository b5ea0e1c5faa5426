"""Reading (the ``ReadStore`` role, in :class:`batchd.store.sqlroles.SqlReads`): here what
is SQLite's own. Reads go to the reader connection: the last committed state, never
waiting for a write."""

from __future__ import annotations

import json
from collections.abc import Sequence

from batchd.store.records import BatchCounts
from batchd.store.rows import batch_counts
from batchd.store.sqlhistory import SqlHistory
from batchd.store.sqlite.core import SqliteCore
from batchd.store.sqlite.queries import SQL
from batchd.store.sqlroles import SqlReads

# Sorts after every job id: the `before` of a first page.
_AFTER_EVERY_ID = "\U0010ffff"


class SqliteReads(SqliteCore, SqlReads, SqlHistory):
    def _page_params(self, api_names: Sequence[str], before: str | None) -> tuple[str, str]:
        return self._array(api_names), _AFTER_EVERY_ID if before is None else before

    def _array(self, values: Sequence[str]) -> str:
        return json.dumps(list(values))

    async def counts(self, job_id: str) -> BatchCounts:
        """All counts from one statement, so from one snapshot: a batch moving between
        states while they are read is never counted twice or not at all."""
        (row,) = await self._rows(self._r, SQL.job_counts, await self._key(job_id))
        return batch_counts(row)
