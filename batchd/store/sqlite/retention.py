"""Pruning finished jobs and keeping the files bounded (the ``RetentionStore`` role)."""

from __future__ import annotations

import time

from batchd.constants import PRUNE_CHUNK_ROWS
from batchd.store.records import JobRecord
from batchd.store.rows import batch_range, job_record
from batchd.store.sqlite.core import SqliteCore
from batchd.store.sqlite.queries import pick

(
    _PRUNABLE,
    _DELETE_BATCHES,
    _DELETE_FAILURES,
    _DELETE_CHUNKS,
    _MARK_PRUNED,
    _CHECKPOINT,
    _FREE_PAGES,
) = pick(
    "prunable_jobs",
    "delete_batches",
    "delete_failures",
    "delete_chunks",
    "mark_pruned",
    "checkpoint",
    "free_pages",
)


class SqliteRetention(SqliteCore):
    async def prunable_jobs(self, ended_before: float) -> list[JobRecord]:
        return [job_record(row) for row in await self._rows(self._r, _PRUNABLE, ended_before)]

    async def prune_job(self, job_id: str) -> int:
        """Delete a finished job's batches and failures, a chunk per transaction so the
        write lock is never held for long; the job's own row stays, marked pruned."""
        first, last = batch_range(await self._key(job_id))
        deleted = 0
        while True:
            async with self._transaction() as db:
                removed = await self._exec(db, _DELETE_BATCHES, first, last, PRUNE_CHUNK_ROWS)
                removed += await self._exec(db, _DELETE_FAILURES, first, last, PRUNE_CHUNK_ROWS)
                removed += await self._exec(db, _DELETE_CHUNKS, first, last)
                if removed == 0:
                    await self._exec(db, _MARK_PRUNED, time.time(), job_id)
            deleted += removed
            if removed == 0:
                return deleted

    async def reclaim_space(self, pages: int) -> int:
        """Return up to `pages` free pages to the file system; the number still free."""
        async with self._write_lock:
            # A PRAGMA's argument cannot be bound: the one other SQL written in Python. It
            # frees a page per step, and its rows have no columns, so execute() would step
            # once (one page per call); executescript steps it to the end.
            await self._w.executescript(f"PRAGMA incremental_vacuum({int(pages)})")
            return int(await self._scalar(self._w, _FREE_PAGES))

    async def checkpoint(self) -> None:
        """Copy the WAL into the database and truncate it, so it cannot grow without bound."""
        async with self._write_lock:
            await self._exec(self._w, _CHECKPOINT)
