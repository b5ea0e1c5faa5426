"""Runs jobs: gives them workers, feeds workers batches, and decides how jobs end.

The Scheduler is the face the daemon and the HTTP layer see; behind it:

    allocator - which job gets workers while capacity lasts (priority, then age)
    driver    - one task per worker: grants, outcomes, idling, and its exit (reap)
    hook      - on_job_complete, run once when every batch is terminal
    cluster   - this node among the daemons sharing a queue: heartbeats, the sweep of
                silent nodes, jobs admitted or ended on other nodes
    policy    - the decisions themselves, as pure functions
    jobs      - the unfinished jobs, and finishing one
    state     - what is kept per job and per worker, and the box's capacity

Everything durable goes through the store; what lives here (workers, parked
requests, restart counts) is rebuilt from the store after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from batchd import constants
from batchd.config import DaemonConfig
from batchd.errors import Conflict, NotFound
from batchd.observe.joblogs import JobLogs
from batchd.observe.metrics import Metrics
from batchd.observe.snapshot import SchedulerSnapshot, WorkerSnapshot
from batchd.observe.workers import LiveWorker, WorkerHistory
from batchd.pool.memlimit import MemoryLimiter
from batchd.pool.process import WorkerState
from batchd.pool.spares import SparePool
from batchd.pool.workspace import Workspaces
from batchd.scheduler.allocator import Allocator, LaunchFactory
from batchd.scheduler.cluster import Membership
from batchd.scheduler.driver import Driver, InitFactory
from batchd.scheduler.jobs import Jobs
from batchd.scheduler.state import Capacity, JobRun
from batchd.store import DatabaseUnavailable
from batchd.store.records import JobRecord, JobStatus
from batchd.store.roles import Store
from batchd.wire.ids import batch_id

log = logging.getLogger("batchd.scheduler")


class Scheduler:
    def __init__(
        self,
        config: DaemonConfig,
        store: Store,
        launch_for: LaunchFactory,
        init_for: InitFactory,
        joblogs: JobLogs,
        gpus: list[int] | None = None,
        memory: MemoryLimiter | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics or Metrics()
        self._jobs = Jobs(config, store, self.metrics, joblogs)
        self._capacity = Capacity(config.max_workers, gpus or [], memory or MemoryLimiter())
        self._spares = SparePool(config.state_path / "runtime" / "spare")
        self._workspaces = Workspaces(config.state_path / constants.WORKSPACES_DIR)
        driver = Driver(self._jobs, self._capacity, self._workspaces, init_for)
        self._allocator = Allocator(driver, launch_for, self._spares)
        self._membership = Membership(self._jobs, len(self._capacity.gpus))
        self._forced = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    @property
    def gpus(self) -> list[int]:
        return self._capacity.gpus

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Recover: leases of the previous daemon's workers are charged and re-queued."""
        # Workspaces of the previous daemon's workers (gone with it) are removed.
        await asyncio.to_thread(self._workspaces.sweep)
        expired = await self._membership.join()
        if expired:
            log.info("re-queued leases held when the daemon stopped", extra={"count": len(expired)})
        for job in await self.store.active_jobs():
            self._jobs.runs[job.job_id] = JobRun(job)
        self.metrics.leases_expired(expired, self._jobs.api_of)
        self._loop_task = self._jobs.spawn_task(self._allocator.run_forever(), "scheduler-loop")
        self._jobs.spawn_task(self._renew_leases(), "lease-renewal")
        if self.store.shared:
            self._jobs.spawn_task(self._membership.run_forever(), "cluster-membership")
        self.wake()

    async def stop(self) -> None:
        """Drain: no new leases; in-flight batches get the grace period, then workers die."""
        self._jobs.draining = True
        # No scheduling pass may start a worker while we collect the ones to stop.
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        workers = [w for run in self._jobs.runs.values() for w in run.workers]
        for worker in workers:
            if not worker.leases and worker.state is not WorkerState.INITIALIZING:
                await worker.request_exit()
        exited: asyncio.Future[Any] = asyncio.ensure_future(
            asyncio.gather(*(worker.handle.wait() for worker in workers))
        )
        forced: asyncio.Future[Any] = asyncio.ensure_future(self._forced.wait())
        await asyncio.wait(
            {exited, forced},
            timeout=self.config.worker_stop_grace,
            return_when=asyncio.FIRST_COMPLETED,
        )
        forced.cancel()
        exited.cancel()
        unfinished = [w for w in workers if w.alive]
        await asyncio.gather(*(w.terminate(0.5) for w in unfinished))
        for worker in workers:
            await self._capacity.memory.release(worker.handle.memory_group)
        for worker in unfinished:
            # Cut off by an operator's stop, not by the batch: no attempt is charged.
            if worker.leases:
                held = [(lease.seq, lease.token) for lease in worker.leases]
                # The database down: the next start charges them instead (expire_leases).
                with contextlib.suppress(DatabaseUnavailable):
                    await self.store.release(worker.handle.job_id, held)
        await self._spares.close()
        await self._jobs.cancel_tasks()
        try:
            await self.store.leave()
        except Exception as exc:
            # Its slots free when another node finds it silent.
            log.warning("cannot sign off from the shared queue", extra={"error": str(exc)})
        await self._workspaces.close()

    def wake(self) -> None:
        self._jobs.wake()

    def force_stop(self) -> None:
        """Stop waiting for in-flight batches (a second SIGTERM)."""
        self._forced.set()

    # -- requests from the HTTP layer --------------------------------------------------

    def admit(self, job: JobRecord) -> None:
        # Adopted already when another node's notification raced this admission's answer.
        if job.job_id not in self._jobs.runs:
            wanted = min(job.workers, job.total_batch_count)
            self._jobs.runs[job.job_id] = JobRun(job, wanted=wanted)
        self.wake()

    async def stop_job(self, job_id: str) -> None:
        run = self._jobs.runs.get(job_id)
        if run is None or run.finished:
            job = await self.store.get_job(job_id)
            if job is None:
                raise NotFound(f"job {job_id} not found", "jobID")
            # Admitted on another node and not adopted here yet: stopped in the queue,
            # where every node sees it.
            if job.status.terminal or not await self.store.set_status(job_id, JobStatus.STOPPED):
                raise Conflict(f"job {job_id} has already ended ({job.status})", "jobID")
            return
        await self._jobs.finish(run, JobStatus.STOPPED)

    async def pause_job(self, job_id: str, paused: bool) -> JobRecord:
        """Pause (or resume) the job's leasing; pausing a paused job changes nothing."""
        job = await self.store.get_job(job_id)
        if job is None:
            raise NotFound(f"job {job_id} not found", "jobID")
        if job.status.terminal or not await self.store.pause_job(job_id, paused):
            ended = await self.store.get_job(job_id)
            status = ended.status if ended is not None else job.status
            raise Conflict(f"job {job_id} has already ended ({status})", "jobID")
        return await self._follow_pause(job_id)

    async def pause_api(self, api_name: str, paused: bool) -> list[str]:
        """Pause (or resume) the API's jobs, and those submitted until it is resumed."""
        job_ids = await self.store.pause_api(api_name, paused)
        for job_id in job_ids:
            await self._follow_pause(job_id)
        return job_ids

    async def _follow_pause(self, job_id: str) -> JobRecord:
        job = await self.store.get_job(job_id)
        assert job is not None
        run = self._jobs.runs.get(job_id)
        if run is not None and not run.finished:
            run.job = job
        # A resumed job's parked workers are served at the next pass.
        self.wake()
        return job

    async def stop_api_jobs(self, api_name: str) -> list[str]:
        runs = [
            r for r in self._jobs.runs.values() if r.job.api_name == api_name and not r.finished
        ]
        for run in runs:
            await self._jobs.finish(run, JobStatus.STOPPED, f"API {api_name} was deleted")
        return [run.job_id for run in runs]

    def worker_details(self, job_id: str) -> list[dict[str, Any]]:
        run = self._jobs.runs.get(job_id)
        if run is None:
            return []
        return [
            {"slot": w.slot, "pid": w.pid, "state": str(w.state), "gpus": w.gpus}
            for w in sorted(run.workers, key=lambda w: w.slot)
        ]

    def worker_counts(self, job_id: str) -> dict[str, int]:
        return self._jobs.worker_counts(job_id)

    def snapshot(self) -> SchedulerSnapshot:
        """The jobs and workers now, for metrics and the daemon's status."""
        runs = self._jobs.runs
        active = tuple(sorted(runs))
        return SchedulerSnapshot(
            max_workers=self.config.max_workers,
            gpus=tuple(self._capacity.gpus),
            active_jobs=active,
            workers=tuple(
                WorkerSnapshot(
                    job_id, runs[job_id].job.api_name, w.slot, w.pid, str(w.state), tuple(w.gpus)
                )
                for job_id in active
                for w in sorted(runs[job_id].workers, key=lambda w: w.slot)
            ),
        )

    @property
    def worker_history(self) -> WorkerHistory:
        return self._jobs.history

    def live_workers(self) -> list[LiveWorker]:
        """Every live worker, by job id then slot, with the batch it is on."""
        return [
            LiveWorker(
                api_name=run.job.api_name,
                job_id=run.job_id,
                slot=w.slot,
                pid=w.pid,
                state=str(w.state),
                gpus=tuple(w.gpus),
                batch_id=None if (seq := w.held_seq()) is None else batch_id(run.job_id, seq),
                started_at=w.handle.started_at,
            )
            for run in sorted(self._jobs.runs.values(), key=lambda run: run.job_id)
            for w in sorted(run.workers, key=lambda w: w.slot)
        ]

    # -- leases of live workers are renewed; lost ones expire ---------------------------

    async def _renew_leases(self) -> None:
        interval = self.config.lease_timeout / 3
        checkpoint_every = self.config.checkpoint_interval
        next_checkpoint = time.monotonic() + checkpoint_every
        runs = self._jobs.runs
        while True:
            await asyncio.sleep(interval)
            if time.monotonic() >= next_checkpoint:
                next_checkpoint = time.monotonic() + checkpoint_every
                with contextlib.suppress(Exception):
                    await self.store.checkpoint()
            held = [
                (run.job_id, lease.seq, lease.token)
                for run in runs.values()
                for worker in run.workers
                for lease in worker.leases
            ]
            try:
                if held:
                    await self.store.renew(held, self.config.lease_timeout)
                # Only a job whose stored leases outnumber its workers' can have lost any.
                suspects = [
                    run.job_id
                    for run in list(runs.values())
                    if not run.finished
                    and (await self.store.counts(run.job_id)).leased
                    > sum(len(worker.leases) for worker in run.workers)
                ]
                expired = (
                    await self.store.expire_leases(time.time(), job_ids=suspects)
                    if suspects
                    else []
                )
                self.metrics.leases_expired(expired, self._jobs.api_of)
            except DatabaseUnavailable:
                continue  # the store logs an outage once
            except Exception:
                log.exception("lease renewal failed")
                continue
            if expired:
                log.warning("leases expired", extra={"count": len(expired)})
                self.wake()
