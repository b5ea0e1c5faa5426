"""Which job gets workers: a pass over the unfinished jobs, highest priority and then
oldest first, starts workers while slots, GPUs and memory last (policy.wanted_workers says
how many each job wants); when a job is left waiting, idle workers give their slots up."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial

from batchd import constants
from batchd.observe.joblogs import guarded_writer
from batchd.pool.process import WorkerLaunch
from batchd.pool.spares import SparePool
from batchd.pool.workspace import Workspace
from batchd.scheduler import policy
from batchd.scheduler.driver import Driver
from batchd.scheduler.state import JobRun, WorkerRun
from batchd.store import DatabaseUnavailable
from batchd.store.records import HookClaim, JobRecord, JobStatus

log = logging.getLogger("batchd.scheduler")

LaunchFactory = Callable[[JobRecord, int], Awaitable[WorkerLaunch]]


class LaunchRefused(Exception):
    """A launch factory's refusal: the job cannot run here (its project cannot be had on
    this node), and ends worker_error with this message."""


class Allocator:
    """Starts workers from the spare pool, each in a workspace of its own, and hands each
    to `driver`, whose jobs, capacity and workspaces it shares."""

    def __init__(self, driver: Driver, launch_for: LaunchFactory, spares: SparePool) -> None:
        self.jobs, self.capacity = driver.jobs, driver.capacity
        self._workspaces = driver.workspaces
        self._driver = driver
        self._launch_for = launch_for
        self._spares = spares

    async def run_forever(self) -> None:
        woken = self.jobs.woken
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that races with the event being set, and the loop would never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(constants.SCHEDULER_IDLE_INTERVAL):
                    await woken.wait()
            woken.clear()
            try:
                await self.allocate()
            except DatabaseUnavailable:
                pass  # the store logs an outage once; the next pass tries again
            except Exception:
                log.exception("scheduling pass failed")

    async def allocate(self) -> None:
        jobs = self.jobs
        if jobs.draining:
            return
        now = time.monotonic()
        free = self.capacity.free_slots
        starved = False
        for run in sorted(jobs.runs.values(), key=lambda r: (-r.job.priority, r.job.created_at)):
            if run.finished:
                if not run.workers:
                    jobs.retire(run)
                continue
            job = run.job
            deadline = job.deadline()
            if deadline is not None and time.time() >= deadline:
                await jobs.finish(run, JobStatus.TIMED_OUT, f"timed out after {job.timeout:g}s")
                continue
            if free <= 0 and not run.workers and job.status is JobStatus.PENDING:
                # Nothing could start it now: spare the queue counts of every waiting job.
                # (A paused one wants no slot: others' idle workers keep theirs.)
                starved = starved or not job.paused
                continue
            run.wanted = await self._wanted_workers(run)
            if run.finished or run.wanted <= len(run.workers):
                continue
            if run.next_spawn_at > now or run.claim_retry_at > now:
                continue
            count = min(run.wanted - len(run.workers), free)
            if count <= 0:
                starved = True
                continue
            for _ in range(count):
                started = await self._start_worker(run)
                if started is None:
                    # Its workers run on other nodes: nothing here is starved for it.
                    run.claim_retry_at = now + constants.CLUSTER_CLAIM_RETRY
                    break
                if not started:
                    starved = True
                    break
                free -= 1
        await self._serve_all_parked(release_idle=starved)

    async def _wanted_workers(self, run: JobRun) -> int:
        counts = await self.jobs.store.counts(run.job_id)
        wanted = policy.wanted_workers(
            workers=run.job.workers,
            live=len(run.workers),
            counts=counts,
            hook_running=run.completing is not None or run.hook_elsewhere,
            has_on_complete=run.job.has_on_complete,
            paused=bool(run.job.paused),
        )
        if wanted is None:
            await self.jobs.conclude(run, counts)
            return 0
        live = len(run.workers)
        # A worker started only to run on_job_complete: not when another node runs it.
        if (
            wanted > live
            and not counts.unfinished
            and await self.jobs.store.claim_hook(run.job_id) is not HookClaim.CLAIMED
        ):
            run.hook_elsewhere = True
            return live
        return wanted

    async def _start_worker(self, run: JobRun) -> bool | None:
        """Start one worker for the job; False when it must wait for GPUs to free up (or
        for disk space for its workspace), None when the job's `workers` are all taken
        (on other nodes sharing the queue)."""
        jobs, memory = self.jobs, self.capacity.memory
        slot = self.capacity.next_slot()
        try:
            launch = await self._launch_for(run.job, slot)
        except LaunchRefused as exc:
            await jobs.finish(run, JobStatus.WORKER_ERROR, str(exc))
            return True
        claim = await jobs.store.claim_worker(run.job_id, run.job.workers)
        if claim is None:
            return None
        gpus = self.capacity.take(slot, launch.gpus)
        if gpus is None:
            await jobs.store.release_worker(run.job_id, claim)
            return False
        if run.job.status is JobStatus.PENDING:
            await jobs.store.set_status(run.job_id, JobStatus.RUNNING)
            run.job = await jobs.reload(run)
        group = memory.prepare(launch.mem)
        # Only its own GPUs are visible to a worker; none at all when it asked for none.
        env = {
            **launch.env,
            "CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus)),
            **memory.env_for(launch.mem, group),
        }
        job_log = jobs.joblogs.acquire(run.job_id)
        api = run.job.api_name
        sink = guarded_writer(job_log, run.job_id, partial(jobs.metrics.log_line_dropped, api))
        workspace: Workspace | None = None
        try:
            workspace = await self._workspaces.create(
                launch.cwd, f"{run.job_id}-{slot}", launch.disk
            )
            handle = await self._spares.spawn(
                replace(launch, cwd=workspace.project, env={**env, **workspace.env()}), sink
            )
        except OSError as exc:
            if workspace is not None:
                await self._workspaces.remove(workspace)
            self.capacity.release(slot, gpus)
            await jobs.store.release_worker(run.job_id, claim)
            jobs.joblogs.release(run.job_id)
            await memory.release(group)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                # No room for its workspace: the daemon's trouble, not the job's. Try again.
                log.warning(
                    "no disk space for a worker's workspace; retrying",
                    extra={"jobID": run.job_id, "error": str(exc)},
                )
                run.next_spawn_at = time.monotonic() + constants.STORAGE_RETRY_MAX
                jobs.spawn_task(jobs.wake_at(run.next_spawn_at), "workspace-retry")
                return False
            await jobs.finish(run, JobStatus.WORKER_ERROR, f"cannot start worker: {exc}")
            return True
        worker = WorkerRun(handle, workspace, claim=claim)
        jobs.spawn_task(self._driver.watch_workspace(worker, workspace), f"workspace-{slot}")
        handle.gpus = gpus
        handle.memory_group = memory.attach(handle.pid, launch.mem, group)
        run.workers.add(worker)
        log.info(
            "worker started",
            extra={"jobID": run.job_id, "slot": slot, "pid": handle.pid, "gpus": gpus},
        )
        jobs.spawn_task(self._driver.drive(run, worker), f"worker-{slot}")
        return True

    async def _serve_all_parked(self, release_idle: bool) -> None:
        for run in list(self.jobs.runs.values()):
            if not run.parked:
                continue
            if release_idle:
                # Another job is waiting for capacity; idle workers give their slots up.
                parked, run.parked = run.parked, []
                for worker in parked:
                    await worker.request_exit()
            elif run.job.paused:
                # Nothing to lease until the resume, which wakes a pass: no queries till then.
                continue
            else:
                await self._driver.serve_parked(run)
