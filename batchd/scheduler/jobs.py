"""The unfinished jobs, and the verbs every part of the scheduler applies to them: wake the
scheduling pass, start a background task, and finish a job."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Coroutine
from typing import Any

from batchd import constants
from batchd.config import DaemonConfig
from batchd.observe.joblogs import JobLogs
from batchd.observe.metrics import Metrics
from batchd.observe.workers import WorkerHistory
from batchd.scheduler import policy
from batchd.scheduler.state import JobRun
from batchd.store import views
from batchd.store.records import BatchCounts, JobRecord, JobStatus
from batchd.store.roles import Store

log = logging.getLogger("batchd.scheduler")


class Jobs:
    def __init__(
        self, config: DaemonConfig, store: Store, metrics: Metrics, joblogs: JobLogs
    ) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics
        self.joblogs = joblogs
        # Worker exits, for GET /workers (in memory: a restart forgets them).
        self.history = WorkerHistory()
        self.runs: dict[str, JobRun] = {}
        self.draining = False
        self.woken = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._final_worker_counts: OrderedDict[str, dict[str, int]] = OrderedDict()

    def wake(self) -> None:
        self.woken.set()

    async def wake_at(self, when: float) -> None:
        await asyncio.sleep(max(0.0, when - time.monotonic()))
        self.wake()

    def spawn_task(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "background task failed", exc_info=task.exception(), extra={"task": task.get_name()}
            )

    async def cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def reload(self, run: JobRun) -> JobRecord:
        job = await self.store.get_job(run.job_id)
        assert job is not None
        return job

    # -- what status readers see ---------------------------------------------------------

    def worker_counts(self, job_id: str) -> dict[str, int]:
        run = self.runs.get(job_id)
        if run is None:
            return dict(self._final_worker_counts.get(job_id, views.empty_worker_counts()))
        return run.worker_counts()

    def retire(self, run: JobRun) -> None:
        """Forget a finished job, keeping its final worker counts for status readers."""
        self.runs.pop(run.job_id, None)
        self._final_worker_counts[run.job_id] = run.worker_counts()
        while len(self._final_worker_counts) > constants.FINISHED_JOBS_REMEMBERED:
            self._final_worker_counts.popitem(last=False)

    def retired(self, job_id: str) -> bool:
        """Whether this node ran the job to its end lately (a read of the queue taken
        before the end was committed may still list it as active)."""
        return job_id in self._final_worker_counts

    def api_of(self, job_id: str) -> str:
        """The API of an unfinished job (for metrics labels)."""
        run = self.runs.get(job_id)
        return run.job.api_name if run is not None else "unknown"

    # -- finish --------------------------------------------------------------------------

    async def conclude(self, run: JobRun, counts: BatchCounts) -> None:
        await self.finish(run, policy.final_status(counts))

    async def finish(self, run: JobRun, status: JobStatus, error: str | None = None) -> None:
        if run.finished or run.finishing:
            return
        # Finished only once the store says so: if it cannot (disk full), the job stays
        # running, stoppable, and its workers keep working.
        run.finishing = True
        try:
            changed = await self.store.set_status(run.job_id, status, error)
        finally:
            run.finishing = False
        run.finished = True
        if changed:
            log.info("job ended", extra={"jobID": run.job_id, "status": str(status)})
        graceful = status in (JobStatus.SUCCEEDED, JobStatus.COMPLETED_WITH_FAILURES)
        run.parked.clear()
        for worker in list(run.workers):
            if graceful and not worker.leases:
                await worker.request_exit()
            else:
                self.spawn_task(
                    worker.terminate(self.config.worker_stop_grace), f"stop-worker-{worker.slot}"
                )
        self.wake()
