"""What the dashboard charts and lists after the fact, of the ``ReadStore`` role, for
both SQL backends: a job's outcomes over time and the dead-lettered batches across jobs.
Read on request only, from the reader: nothing here runs on the hot path."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from batchd.store.records import FailedBatch, HistoryBucket
from batchd.store.rows import SEQ_MASK, batch_range
from batchd.store.sqlcore import SqlCore

# Above every batch id: the cursor of a first page.
_ABOVE_EVERY_ID = (1 << 63) - 1


class SqlHistory(SqlCore[Any, Any]):
    def _array(self, values: Sequence[str]) -> Any:
        """A list of strings as the backend's statements bind one (the backend's reads)."""
        raise NotImplementedError

    async def job_history(self, job_id: str, bucket_seconds: int) -> list[HistoryBucket]:
        """The job's successes and failed attempts per `bucket_seconds`, oldest first; a
        bucket with neither is left out."""
        first, last = batch_range(await self._key(job_id))
        sql = self._sql
        buckets: dict[int, list[int]] = {}
        for column, statement in enumerate((sql.job_success_times, sql.job_failure_times)):
            for start, count in await self._rows(self._r, statement, first, last, bucket_seconds):
                # A whole number of whole-second steps (PostgreSQL's floor() gives a float).
                buckets.setdefault(int(start), [0, 0])[column] = int(count)
        return [(start, counts[0], counts[1]) for start, counts in sorted(buckets.items())]

    async def failed_batches(
        self, api_names: Sequence[str], limit: int, before: int | None = None, contains: str = ""
    ) -> list[FailedBatch]:
        """Dead-lettered batches of the APIs, newest job first (then by batch): the page
        after the batch `before` (a FailedBatch's batch_key); `contains` keeps those
        whose last error holds that text (case-sensitive)."""
        if not api_names:
            return []
        params = (
            self._array(api_names),
            _ABOVE_EVERY_ID if before is None else before,
            self._stored_text(contains or None),
            limit,
        )
        rows = await self._rows(self._r, self._sql.failed_batches_page, *params)
        return [
            FailedBatch(
                batch_key=row[0],
                api_name=row[1],
                job_id=row[2],
                seq=row[0] & SEQ_MASK,
                attempts=row[3],
                error=self._loaded_text(row[4]),
                traceback=self._loaded_text(row[5]),
                failed_at=row[6],
            )
            for row in rows
        ]
