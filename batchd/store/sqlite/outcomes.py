"""What workers report: successes and failed attempts (the ``OutcomeStore`` role)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import aiosqlite

from batchd.store.groupcommit import GroupCommit
from batchd.store.records import BatchState, Failure, Success
from batchd.store.rows import SEQ_BITS, Run, batch_range, success_runs
from batchd.store.sqlite.core import SqliteCore
from batchd.store.sqlite.queries import pick

_CURRENT_LEASES, _SUCCEED_ONE, _SUCCEED_RUN, _FAIL, _INSERT_FAILURE = pick(
    "current_leases", "succeed_one", "succeed_run", "fail_batch", "insert_failure"
)


# (job key, successes with a result, runs of those without) of one report.
_Report = tuple[int, list[tuple[bytes, float, int, int]], list[Run]]


class SqliteOutcomes(SqliteCore):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._successes = GroupCommit[_Report](self._commit_successes)

    async def close(self) -> None:
        await self._successes.drain()
        await super().close()

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

    async def _commit_successes(self, reports: list[_Report]) -> list[int]:
        async with self._transaction() as db:
            return [await self._store_successes(db, *report) for report in reports]

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
                        _CURRENT_LEASES,
                        min(row[2] for row in rows),
                        max(row[2] for row in rows),
                    ),
                )
            )
            seconds = sum(row[1] for row in rows if (row[2], row[3]) in current)
            accepted = await self._exec_many(db, _SUCCEED_ONE, rows)
        for run in runs:
            marked = await self._exec(db, _SUCCEED_RUN, *run)
            accepted += marked
            seconds += run[0] * marked
        if accepted:
            await self._count(db, key, leased=-accepted, succeeded=accepted, seconds=seconds)
        return accepted

    async def fail(
        self, job_id: str, failure: Failure, max_receive_count: int
    ) -> BatchState | None:
        """Record a failed attempt; the batch is re-queued or, out of attempts, dead-lettered.

        Returns the batch's new state, or None when the lease token was stale."""
        first, _ = batch_range(await self._key(job_id))
        batch = first + failure.seq
        async with self._transaction() as db:
            async with db.execute(_FAIL, (max_receive_count, batch, failure.token)) as cursor:
                row = await cursor.fetchone()
            if row is None:
                return None
            dead = row[0] == BatchState.DEAD
            await self._count(
                db, batch >> SEQ_BITS, leased=-1, queued=1 - dead, dead=dead, failures=1
            )
            await self._exec(
                db, _INSERT_FAILURE, batch, row[1], failure.error, failure.traceback, time.time()
            )
        return BatchState(row[0])
