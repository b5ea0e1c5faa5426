"""What workers report: successes and failed attempts (the ``OutcomeStore`` role)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import asyncpg

from batchd.store.groupcommit import GroupCommit
from batchd.store.postgres.core import PostgresCore
from batchd.store.postgres.queries import pick
from batchd.store.records import BatchState, Failure, Success
from batchd.store.rows import SEQ_BITS, Run, batch_range, success_runs

_SUCCEED_EACH, _SUCCEED_RUN, _FAIL, _INSERT_FAILURE = pick(
    "succeed_each", "succeed_run", "fail_batch", "insert_failure"
)

# (results, durations, ids, tokens) of the successes that carry a result: one array each.
_Columns = tuple[list[bytes], list[float], list[int], list[int]]
# (job key, successes with a result, runs of those without) of one report.
_Report = tuple[int, _Columns, list[Run]]


class PostgresOutcomes(PostgresCore):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._successes = GroupCommit[_Report](self._commit_successes)

    async def close(self) -> None:
        await self._successes.drain()
        await super().close()

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

    async def _commit_successes(self, reports: list[_Report]) -> list[int]:
        async with self._transaction() as db:
            return [await self._store_successes(db, *report) for report in reports]

    async def _store_successes(
        self, db: asyncpg.Connection, key: int, columns: _Columns, runs: list[Run]
    ) -> int:
        """Successes with results in one statement that returns the accepted ones' time."""
        accepted, seconds = 0, 0.0
        if columns[0]:
            # Only the accepted ones come back: their time is the time counted.
            durations = await db.fetch(_SUCCEED_EACH, *columns)
            accepted = len(durations)
            seconds = sum(row[0] for row in durations)
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
        """The new state comes back from the update; none when the token is stale."""
        first, _ = batch_range(await self._key(job_id))
        batch = first + failure.seq
        async with self._transaction() as db:
            row = await db.fetchrow(_FAIL, max_receive_count, batch, failure.token)
            if row is None:
                return None
            dead = row[0] == BatchState.DEAD
            await self._count(
                db, batch >> SEQ_BITS, leased=-1, queued=1 - dead, dead=dead, failures=1
            )
            await db.execute(
                _INSERT_FAILURE,
                batch,
                row[1],
                failure.error.encode(),
                None if failure.traceback is None else failure.traceback.encode(),
                time.time(),
            )
        return BatchState(row[0])
