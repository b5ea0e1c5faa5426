"""What workers report: successes (a failed attempt is :class:`batchd.store.sqlroles.SqlFailures`)
of the ``OutcomeStore`` role."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from batchd.store.postgres.core import PostgresCore
from batchd.store.postgres.queries import SQL
from batchd.store.records import Success
from batchd.store.rows import Run, batch_range, success_runs
from batchd.store.sqlroles import SqlFailures, SqlSuccesses

# (results, durations, ids, tokens) of the successes that carry a result: one array each.
_Columns = tuple[list[bytes], list[float], list[int], list[int]]
# (job key, successes with a result, runs of those without) of one report.
_Report = tuple[int, _Columns, list[Run]]


class PostgresOutcomes(SqlSuccesses[_Report], PostgresCore, SqlFailures):
    async def succeed(self, job_id: str, outcomes: Sequence[Success]) -> int:
        """Record successes; an outcome whose lease token is stale changes nothing.
        Group commit, as in the SQLite store: the caller returns once they are durable."""
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
        return await self._successes.submit((key, columns, without_result))

    async def _store_successes(
        self, db: asyncpg.Connection, key: int, columns: _Columns, runs: list[Run]
    ) -> int:
        """Successes with results in one statement that returns the accepted ones' time."""
        accepted, seconds = 0, 0.0
        if columns[0]:
            # Only the accepted ones come back: their time is the time counted.
            durations = await db.fetch(SQL.succeed_each, *columns)
            accepted = len(durations)
            seconds = sum(row[0] for row in durations)
        for run in runs:
            marked = await self._exec(db, SQL.succeed_run, *run)
            accepted += marked
            seconds += run[0] * marked
        if accepted:
            await self._count(db, key, leased=-accepted, succeeded=accepted, seconds=seconds)
        return accepted
