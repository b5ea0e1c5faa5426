"""Admitting jobs and changing their status (the ``JobStore`` role)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from batchd.store.chunks import BatchChunks
from batchd.store.records import JobRecord, JobStatus, NewJob
from batchd.store.rows import NumberedChunks, batch_range, job_record, new_job_values
from batchd.store.sqlite.core import SqliteCore
from batchd.store.sqlite.queries import SQL


class SqliteJobs(SqliteCore):
    async def create_job(self, job: NewJob, batches: BatchChunks | Sequence[bytes]) -> JobRecord:
        """Store the job and its payloads in one transaction: admission is all or nothing.

        The payloads are stored in chunks as admitted, not a row per batch: a batch gets
        its row when first leased. A chunk's id is its job's first id plus the number of
        batches before it. Chunks are read from `batches` one at a time (it may be a spool
        on disk), so the transaction holds one in memory, never the whole job."""
        if not isinstance(batches, BatchChunks):
            batches = BatchChunks.of(batches)
        async with self._transaction() as db:
            async with db.execute(SQL.insert_job, new_job_values(job)) as cursor:
                key = cursor.lastrowid
            assert key is not None
            first, _ = batch_range(key)
            numbered = NumberedChunks(first, batches.chunks)
            await self._exec_many(db, SQL.insert_chunk, numbered)
            total = batches.count
            if numbered.batches != total:
                raise ValueError(f"the chunks hold {numbered.batches} batches, not {total}")
            await self._exec(db, SQL.set_batch_count, total, key)
            await self._exec(db, SQL.paused_by_api, key)
            # Read back inside the transaction: the reader may not see the commit yet.
            (row,) = await self._rows(db, SQL.job_by_key, key)
        self._keys[job.job_id] = key
        return job_record(row)

    async def set_status(self, job_id: str, status: JobStatus, error: str | None = None) -> bool:
        """Move a job to `status`; refused (False) once the job is terminal."""
        end_time = time.time() if status.terminal else None
        async with self._transaction() as db:
            changed = await self._exec(db, SQL.set_status, status, end_time, error, job_id)
            if changed and status.terminal:
                # Leases of a finished job are void; give the batches back, unburnt.
                key = await self._key(job_id)
                refunded = await self._exec(db, SQL.refund_leases, *batch_range(key))
                await self._count(db, key, queued=refunded, leased=-refunded)
            return changed > 0

    async def set_has_on_complete(self, job_id: str, value: bool) -> None:
        async with self._transaction() as db:
            await self._exec(db, SQL.set_has_on_complete, int(value), job_id)
