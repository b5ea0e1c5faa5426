"""Storing successes that carry a result, of the ``OutcomeStore`` role (the group commit
and the rest are :class:`batchd.store.sqlroles.SqlSuccesses` and ``SqlFailures``)."""

from __future__ import annotations

from collections.abc import Sequence

import aiosqlite

from batchd.store.records import Success
from batchd.store.rows import batch_range, success_runs
from batchd.store.sqlite.core import SqliteCore
from batchd.store.sqlite.queries import SQL
from batchd.store.sqlroles import SqlFailures, SqlSuccesses

# (result, duration, id, token) of each success that carries a result.
_Rows = list[tuple[bytes, float, int, int]]


class SqliteOutcomes(SqlSuccesses[_Rows], SqliteCore, SqlFailures):
    async def succeed(self, job_id: str, outcomes: Sequence[Success]) -> int:
        """Record successes; an outcome whose lease token is stale changes nothing."""
        key = await self._key(job_id)
        first, _ = batch_range(key)
        rows = [(o.result, o.duration, first + o.seq, o.token) for o in outcomes if o.result]
        without_result = success_runs(first, [o for o in outcomes if not o.result])
        return await self._successes.submit((key, rows or None, without_result))

    async def _store_with_result(self, db: aiosqlite.Connection, rows: _Rows) -> tuple[int, float]:
        # Which of them hold a current lease: the time of those only is counted.
        current = set(
            map(
                tuple,
                await self._rows(
                    db,
                    SQL.current_leases,
                    min(row[2] for row in rows),
                    max(row[2] for row in rows),
                ),
            )
        )
        seconds = sum(row[1] for row in rows if (row[2], row[3]) in current)
        return await self._exec_many(db, SQL.succeed_one, rows), seconds
