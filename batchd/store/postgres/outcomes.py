"""Storing successes that carry a result, of the ``OutcomeStore`` role (the group commit
and the rest are :class:`batchd.store.sqlroles.SqlSuccesses` and ``SqlFailures``)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from batchd.store.postgres.core import PostgresCore
from batchd.store.postgres.queries import SQL
from batchd.store.records import Success
from batchd.store.rows import batch_range, success_runs
from batchd.store.sqlroles import SqlFailures, SqlSuccesses

# (results, durations, ids, tokens) of the successes that carry a result: one array each.
_Columns = tuple[list[bytes], list[float], list[int], list[int]]


class PostgresOutcomes(SqlSuccesses[_Columns], PostgresCore, SqlFailures):
    async def succeed(self, job_id: str, outcomes: Sequence[Success]) -> int:
        """Record successes; an outcome whose lease token is stale changes nothing."""
        key = await self._key(job_id)
        first, _ = batch_range(key)
        with_result = [o for o in outcomes if o.result]
        columns: _Columns = (
            [o.result for o in with_result if o.result],
            [o.duration for o in with_result],
            [first + o.seq for o in with_result],
            [o.token for o in with_result],
        )
        without_result = success_runs(first, [o for o in outcomes if not o.result])
        return await self._successes.submit((key, columns if with_result else None, without_result))

    async def _store_with_result(
        self, db: asyncpg.Connection, columns: _Columns
    ) -> tuple[int, float]:
        """One statement that returns the accepted ones' time: only theirs is counted."""
        durations = await db.fetch(SQL.succeed_each, *columns)
        return len(durations), sum(row[0] for row in durations)
