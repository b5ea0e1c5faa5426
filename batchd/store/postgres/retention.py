"""Pruning finished jobs and keeping the tables bounded (the ``RetentionStore`` role)."""

from __future__ import annotations

import time

from batchd.constants import PRUNE_CHUNK_ROWS
from batchd.store.postgres.core import PostgresCore
from batchd.store.postgres.queries import pick
from batchd.store.records import JobRecord
from batchd.store.rows import batch_range, job_record

(
    _PRUNABLE,
    _DELETE_BATCHES,
    _DELETE_FAILURES,
    _DELETE_CHUNKS,
    _MARK_PRUNED,
    _VACUUM,
) = pick(
    "prunable_jobs",
    "delete_batches",
    "delete_failures",
    "delete_chunks",
    "mark_pruned",
    "vacuum",
)


class PostgresRetention(PostgresCore):
    async def prunable_jobs(self, ended_before: float) -> list[JobRecord]:
        return [job_record(row) for row in await self._r.fetch(_PRUNABLE, ended_before)]

    async def prune_job(self, job_id: str) -> int:
        """A bounded number of rows per transaction, so none runs long."""
        first, last = batch_range(await self._key(job_id))
        deleted = 0
        while True:
            async with self._transaction() as db:
                removed = await self._exec(db, _DELETE_BATCHES, first, last, PRUNE_CHUNK_ROWS)
                removed += await self._exec(db, _DELETE_FAILURES, first, last, PRUNE_CHUNK_ROWS)
                removed += await self._exec(db, _DELETE_CHUNKS, first, last)
                if removed == 0:
                    await db.execute(_MARK_PRUNED, time.time(), job_id)
            deleted += removed
            if removed == 0:
                return deleted

    async def reclaim_space(self, pages: int) -> int:
        """Vacuum the tables pruning empties: their free space is reused, and empty pages
        at their ends go back to the file system. PostgreSQL frees no fixed number of
        pages, so one call does it all: nothing is left for a next step (0)."""
        async with self._write_lock:
            await self._w.execute(_VACUUM)
        return 0

    async def checkpoint(self) -> None:
        """Nothing to do: the server bounds its write-ahead log itself (max_wal_size)."""
