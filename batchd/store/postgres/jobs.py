"""Admitting jobs and changing their status (the ``JobStore`` role)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from batchd.store.chunks import BatchChunks
from batchd.store.postgres.core import PostgresCore
from batchd.store.postgres.queries import SQL
from batchd.store.records import JobRecord, JobStatus, NewJob
from batchd.store.rows import NumberedChunks, UnknownJob, batch_range, job_record, new_job_values


class PostgresJobs(PostgresCore):
    async def create_job(self, job: NewJob, batches: BatchChunks | Sequence[bytes]) -> JobRecord:
        """The job's row, then its chunks as admitted (a batch gets its row when first
        leased), in one transaction; chunks are read one at a time, as they come."""
        if not isinstance(batches, BatchChunks):
            batches = BatchChunks.of(batches)
        async with self._transaction() as db:
            await self._lock_api_pause(db, job.api_name, shared=True)
            key = await db.fetchval(SQL.insert_job, *new_job_values(job))
            await db.execute(SQL.paused_by_api, key)
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
        """A terminal move refunds the job's leases.

        Batches first, then the job's row, as every outcome and lease takes them: two
        daemons never wait on each other in a circle. A job that was over already has no
        leases to refund, so refunding before the status is checked changes nothing."""
        end_time = time.time() if status.terminal else None
        try:
            key = await self._key(job_id)
        except UnknownJob:
            return False
        async with self._transaction() as db:
            if status.terminal:
                # Leases of a finished job are void; give the batches back, unburnt.
                refunded = await self._exec(db, SQL.refund_leases, *batch_range(key))
                if refunded:
                    await self._count(db, key, queued=refunded, leased=-refunded)
            encoded = None if error is None else error.encode()
            moved = await db.fetchval(SQL.set_status, status.value, end_time, encoded, job_id)
            if moved is not None:
                # Every node acts on a stop or a timeout at once, not at its next poll.
                await db.execute(SQL.notify_jobs, job_id)
            return moved is not None

    @asynccontextmanager
    async def _pause_transaction(self) -> AsyncIterator[Any]:
        # On a pool connection, not the writer: an API's pause waits for the admissions
        # to it under way on any node (see _lock_api_pause), and this node's leases and
        # outcomes must not wait with it.
        try:
            async with self._r.acquire() as db, db.transaction():
                yield db
        except Exception as exc:
            self._raise_if_lost(exc)  # an outage is DatabaseUnavailable (503), as elsewhere
            raise

    async def _lock_api_pause(self, db: Any, name: str, shared: bool) -> None:
        await db.execute(SQL.api_pause_lock_shared if shared else SQL.api_pause_lock, name)

    async def _job_changed(self, db: Any, job_id: str) -> None:
        await db.execute(SQL.notify_jobs, job_id)

    async def set_has_on_complete(self, job_id: str, value: bool) -> None:
        async with self._transaction() as db:
            await db.execute(SQL.set_has_on_complete, value, job_id)
