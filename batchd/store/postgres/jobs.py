"""Admitting jobs and changing their status (the ``JobStore`` role)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from batchd.store.chunks import BatchChunks
from batchd.store.postgres.core import PostgresCore
from batchd.store.postgres.queries import SQL
from batchd.store.records import JobRecord, JobStatus, NewJob
from batchd.store.rows import NumberedChunks, batch_range, job_record, new_job_values


class PostgresJobs(PostgresCore):
    async def create_job(self, job: NewJob, batches: BatchChunks | Sequence[bytes]) -> JobRecord:
        """The job's row, then its chunks as admitted (a batch gets its row when first
        leased), in one transaction; chunks are read one at a time, as they come."""
        if not isinstance(batches, BatchChunks):
            batches = BatchChunks.of(batches)
        async with self._transaction() as db:
            key = await db.fetchval(SQL.insert_job, *new_job_values(job))
            first, _ = batch_range(key)
            numbered = NumberedChunks(first, batches.chunks)
            await db.executemany(SQL.insert_chunk, numbered)
            total = batches.count
            if numbered.batches != total:
                raise ValueError(f"the chunks hold {numbered.batches} batches, not {total}")
            row = await db.fetchrow(SQL.set_batch_count, total, key)
            assert row is not None
            await db.execute(SQL.notify_jobs, job.job_id)
        self._keys[job.job_id] = key
        return job_record(row)

    async def set_status(self, job_id: str, status: JobStatus, error: str | None = None) -> bool:
        """The key comes back from the update: a terminal move refunds the job's leases."""
        end_time = time.time() if status.terminal else None
        async with self._transaction() as db:
            encoded = None if error is None else error.encode()
            key = await db.fetchval(SQL.set_status, status.value, end_time, encoded, job_id)
            if key is not None and status.terminal:
                # Leases of a finished job are void; give the batches back, unburnt.
                refunded = await self._exec(db, SQL.refund_leases, *batch_range(key))
                await self._count(db, key, queued=refunded, leased=-refunded)
            if key is not None:
                # Every node acts on a stop or a timeout at once, not at its next poll.
                await db.execute(SQL.notify_jobs, job_id)
            return key is not None

    async def set_has_on_complete(self, job_id: str, value: bool) -> None:
        async with self._transaction() as db:
            await db.execute(SQL.set_has_on_complete, value, job_id)
