"""What workers report: successes (a failed attempt is :class:`batchd.store.sqlroles.SqlFailures`)
of the ``OutcomeStore`` role."""

from __future__ import annotations

from collections.abc import Sequence

import aiosqlite

from batchd.store.records import Success
from batchd.store.rows import Run, batch_range, success_runs
from batchd.store.sqlite.core import SqliteCore
from batchd.store.sqlite.queries import SQL
from batchd.store.sqlroles import SqlFailures, SqlSuccesses

# (job key, successes with a result, runs of those without) of one report.
_Report = tuple[int, list[tuple[bytes, float, int, int]], list[Run]]


class SqliteOutcomes(SqlSuccesses[_Report], SqliteCore, SqlFailures):
    async def succeed(self, job_id: str, outcomes: Sequence[Success]) -> int:
        """Record successes; an outcome whose lease token is stale changes nothing.

        Group commit: successes reported while a commit is under way wait for the
        next one and share it, so a synchronous=FULL fsync is paid once per group,
        not once per batch. The caller returns only after its rows are durable.
        """
        key = await self._key(job_id)
        first, _ = batch_range(key)
        rows = [(o.result, o.duration, first + o.seq, o.token) for o in outcomes if o.result]
        without_result = success_runs(first, [o for o in outcomes if not o.result])
        return await self._successes.submit((key, rows, without_result))

    async def _store_successes(
        self,
        db: aiosqlite.Connection,
        key: int,
        rows: list[tuple[bytes, float, int, int]],
        runs: list[Run],
    ) -> int:
        """Mark successes with a current lease token, and count the ones that were."""
        accepted, seconds = 0, 0.0
        if rows:
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
            accepted = await self._exec_many(db, SQL.succeed_one, rows)
        for run in runs:
            marked = await self._exec(db, SQL.succeed_run, *run)
            accepted += marked
            seconds += run[0] * marked
        if accepted:
            await self._count(db, key, leased=-accepted, succeeded=accepted, seconds=seconds)
        return accepted
