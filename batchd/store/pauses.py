"""Pausing and resuming a job or an API (the ``PauseStore`` role), alike in both SQL
backends. A pause is a flag on the job's row, which the lease statements read already:
leasing a paused job finds nothing, with no query more on the lease path. An API's pause
is a row of its own too, that admission reads, so the jobs admitted under it start paused.
"""

from __future__ import annotations

import time
from contextlib import AbstractAsyncContextManager
from typing import Any

from batchd.store.records import PAUSED_BY_API, PAUSED_BY_JOB
from batchd.store.sqlcore import SqlCore


class SqlPauses(SqlCore[Any, Any]):
    async def pause_job(self, job_id: str, paused: bool) -> bool:
        """Set (or clear) the job's own pause; False when no unfinished job has the id.
        Its API's pause, if any, holds on."""
        return await self._set_pause(job_id, paused, PAUSED_BY_JOB)

    async def pause_api(self, name: str, paused: bool) -> list[str]:
        """Pause (or resume) the API: its unfinished jobs, and the jobs admitted until it
        is resumed. The ids of the unfinished jobs it reached."""
        now = time.time()
        async with self._pause_transaction() as db:
            await self._lock_api_pause(db, name, shared=False)
            if paused:
                await self._exec(db, self._sql.pause_api, name, now)
            else:
                await self._exec(db, self._sql.resume_api, name)
            job_ids = [row[0] for row in await self._rows(db, self._sql.active_jobs_of_api, name)]
            statement = self._sql.pause_job if paused else self._sql.resume_job
            for job_id in job_ids:
                await self._exec(db, statement, PAUSED_BY_API, now, job_id)
                await self._job_changed(db, job_id)
        return job_ids

    async def paused_apis(self) -> list[str]:
        return [row[0] for row in await self._rows(self._r, self._sql.paused_apis)]

    async def _set_pause(self, job_id: str, paused: bool, flag: int) -> bool:
        statement = self._sql.pause_job if paused else self._sql.resume_job
        async with self._transaction() as db:
            changed = await self._exec(db, statement, flag, time.time(), job_id)
            if changed:
                await self._job_changed(db, job_id)
        return changed > 0

    def _pause_transaction(self) -> AbstractAsyncContextManager[Any]:
        """Where an API's pause is written: the writer's transaction, where nothing can
        make it wait."""
        return self._transaction()

    async def _lock_api_pause(self, db: Any, name: str, shared: bool) -> None:
        """Where several daemons admit jobs: an API's pause waits for the admissions under
        way (they share the lock), so that none of their jobs escapes it."""

    async def _job_changed(self, db: Any, job_id: str) -> None:
        """Tell the other daemons sharing the queue, if any, on commit."""
