"""Reading jobs, their counts, pages of results and dead letters, and the counts metrics
report (the ``ReadStore`` role). Reads go to the reader pool: the last committed state,
never waiting for a write."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from batchd.constants import STREAM_PAGE_ROWS
from batchd.store.postgres.core import PostgresCore
from batchd.store.postgres.queries import pick
from batchd.store.records import BatchCounts, DeadLetter, JobRecord, ListedJob, MetricCounts, Result
from batchd.store.rows import SEQ_MASK, batch_counts, batch_range, job_record

(
    _JOB_BY_ID,
    _ACTIVE_JOBS,
    _JOBS_PAGE,
    _ACTIVE_JOBS_PAGE,
    _JOB_COUNTS,
    _JOBS_BY_STATUS,
    _QUEUE_DEPTH,
    _RESULTS_PAGE,
    _DEAD_LETTERS_PAGE,
) = pick(
    "job_by_id",
    "active_jobs",
    "jobs_page",
    "active_jobs_page",
    "job_counts",
    "jobs_by_status",
    "queue_depth",
    "results_page",
    "dead_letters_page",
)


class PostgresReads(PostgresCore):
    async def get_job(self, job_id: str) -> JobRecord | None:
        row = await self._r.fetchrow(_JOB_BY_ID, job_id)
        return None if row is None else job_record(row)

    async def active_jobs(self) -> list[JobRecord]:
        return [job_record(row) for row in await self._r.fetch(_ACTIVE_JOBS)]

    async def list_jobs_page(
        self,
        api_names: Sequence[str],
        limit: int,
        before: str | None = None,
        active_only: bool = False,
    ) -> list[ListedJob]:
        """`before` is NULL for a first page (job ids sort by byte: COLLATE "C")."""
        if not api_names:
            return []
        sql = _ACTIVE_JOBS_PAGE if active_only else _JOBS_PAGE
        rows = await self._r.fetch(sql, list(api_names), before, limit)
        return [ListedJob(job_record(row), batch_counts(row[18:])) for row in rows]

    async def counts(self, job_id: str) -> BatchCounts:
        """One row, so one snapshot."""
        row = await self._r.fetchrow(_JOB_COUNTS, await self._key(job_id))
        assert row is not None, "a job's row outlives its key"
        return batch_counts(row)

    async def metric_counts(self) -> MetricCounts:
        """Summed here from one row per unfinished job."""
        statuses = await self._r.fetch(_JOBS_BY_STATUS)
        queue: dict[str, list[int]] = {}
        for api, queued, leased in await self._r.fetch(_QUEUE_DEPTH):
            totals = queue.setdefault(api, [0, 0])
            totals[0] += queued
            totals[1] += leased
        return MetricCounts(
            jobs_by_status={status: count for status, count in statuses},
            queued_by_api={api: totals[0] for api, totals in queue.items()},
            leased_by_api={api: totals[1] for api, totals in queue.items()},
        )

    async def dead_letters(self, job_id: str) -> AsyncIterator[DeadLetter]:
        async for row in self._pages(job_id, _DEAD_LETTERS_PAGE):
            error, traceback = row[3], row[4]
            yield DeadLetter(
                row[0] & SEQ_MASK,
                row[1],
                row[2],
                None if error is None else error.decode(),
                None if traceback is None else traceback.decode(),
            )

    async def results(self, job_id: str) -> AsyncIterator[Result]:
        async for row in self._pages(job_id, _RESULTS_PAGE):
            yield Result(row[0] & SEQ_MASK, row[1])

    async def _pages(self, job_id: str, sql: str) -> AsyncIterator[Any]:
        """Keyset pages on the batch id: each page is its own short read, no open cursor.
        `sql` takes (after_id, last_id, limit) and selects the id first."""
        first, last = batch_range(await self._key(job_id))
        after = first - 1
        while True:
            rows = await self._r.fetch(sql, after, last, STREAM_PAGE_ROWS)
            for row in rows:
                yield row
            if len(rows) < STREAM_PAGE_ROWS:
                return
            after = rows[-1][0]
