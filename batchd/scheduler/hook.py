"""on_job_complete: run once by one worker when every batch is terminal, under
on_job_complete_timeout; the job ends when it returns, raises or times out."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from functools import partial

from batchd.observe.joblogs import guarded_writer
from batchd.scheduler import policy
from batchd.scheduler.jobs import Jobs
from batchd.scheduler.state import JobRun, WorkerRun
from batchd.store import views
from batchd.store.records import BatchCounts, JobStatus
from batchd.wire.messages import Complete, Completed
from batchd.worker.log import format_time

log = logging.getLogger("batchd.scheduler")


class Hook:
    def __init__(self, jobs: Jobs) -> None:
        self.jobs = jobs

    async def run(self, run: JobRun, worker: WorkerRun, counts: BatchCounts) -> None:
        """Have `worker` run on_job_complete with the job's status as it will end."""
        run.completing = worker
        status = views.job_status(run.job, counts, self.jobs.worker_counts(run.job_id))
        status["status"] = str(policy.final_status(counts))
        await worker.handle.send(Complete(status).encode())
        self._limit(run, worker)

    async def completed(self, run: JobRun, message: Completed) -> None:
        run.completing = None
        if run.hook_timer is not None:
            run.hook_timer.cancel()
            run.hook_timer = None
        if message.ok:
            run.hook_done = True
            await self.jobs.conclude(run, await self.jobs.store.counts(run.job_id))
        else:
            error = f"on_job_complete failed: {message.error}"
            await self.jobs.finish(
                run, JobStatus.WORKER_ERROR, with_traceback(error, message.traceback)
            )

    def _limit(self, run: JobRun, worker: WorkerRun) -> None:
        """An on_job_complete still running after on_job_complete_timeout gets its worker
        killed; the job ends as its batches decided, saying why in its error and log."""
        limit = self.jobs.config.on_job_complete_timeout

        def expire() -> None:
            run.hook_timer = None
            if run.completing is worker and not run.finished:
                self.jobs.spawn_task(self._timed_out(run, worker, limit), "hook-timeout")

        run.hook_timer = asyncio.get_running_loop().call_later(limit, expire)

    async def _timed_out(self, run: JobRun, worker: WorkerRun, limit: float) -> None:
        if run.completing is not worker or run.finished:
            return
        error = (
            f"on_job_complete did not finish within {limit:g}s (on_job_complete_timeout); "
            "its worker was killed"
        )
        log.warning("on_job_complete timed out", extra={"jobID": run.job_id, "limit": limit})
        worker.killed = True
        worker.handle.signal(signal.SIGKILL)
        run.completing = None
        # Not run again by another worker: the job ends now.
        run.hook_done = True
        self._log_record(run, worker, "ERROR", error)
        counts = await self.jobs.store.counts(run.job_id)
        await self.jobs.finish(run, policy.final_status(counts), error)

    def _log_record(self, run: JobRun, worker: WorkerRun, level: str, message: str) -> None:
        """A record of the daemon's own in the job's log, labelled as the worker's."""
        job_log = self.jobs.joblogs.acquire(run.job_id)
        dropped = partial(self.jobs.metrics.log_line_dropped, run.job.api_name)
        try:
            guarded_writer(job_log, run.job_id, dropped)(
                {
                    "asctime": format_time(time.time()),
                    "levelname": level,
                    "message": message,
                    "process": worker.pid,
                    "labels": dict(worker.handle.labels),
                }
            )
        finally:
            self.jobs.joblogs.release(run.job_id)


def with_traceback(error: str, trace: str | None) -> str:
    return f"{error}\n{trace}" if trace else error
