"""Runs jobs: gives them workers, feeds workers batches, and decides how jobs end.

The scheduler is a small loop of named verbs (after gunicorn's arbiter):

    allocate  - give waiting jobs workers while capacity lasts (priority, then age)
    dispatch  - answer a worker asking for work: lease batches, park it, run
                on_job_complete, or tell it to exit
    record    - store the outcomes a worker reports
    reap      - account for a worker that exited, and charge the batch it held
    finish    - move a job to a terminal status and retire its workers

Everything durable goes through the store; what lives here (workers, parked
requests, restart counts) is rebuilt from the store after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import math
import signal
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from batchd import constants
from batchd.config import DaemonConfig
from batchd.errors import conflict, not_found
from batchd.observe.joblogs import JobLogs, guarded_writer
from batchd.observe.metrics import Metrics
from batchd.pool.memlimit import MemoryLimiter
from batchd.pool.process import (
    OomDetector,
    SparePool,
    WorkerLaunch,
    WorkerProcess,
    WorkerState,
    describe_exit,
)
from batchd.pool.workspace import Workspace, Workspaces
from batchd.store import views
from batchd.store.base import (
    BatchCounts,
    Failure,
    JobRecord,
    JobStatus,
    Lease,
    Store,
    Success,
)
from batchd.wire import framing as protocol
from batchd.worker.log import format_time

log = logging.getLogger("batchd.scheduler")

LaunchFactory = Callable[[JobRecord, int], Awaitable[WorkerLaunch]]
InitFactory = Callable[[JobRecord], Awaitable[dict[str, Any]]]


@dataclass
class JobRun:
    """In-memory state of one unfinished job."""

    job: JobRecord
    workers: set[WorkerProcess] = field(default_factory=set)
    parked: list[WorkerProcess] = field(default_factory=list)
    completing: WorkerProcess | None = None
    # Kills the worker running on_job_complete once on_job_complete_timeout has passed.
    hook_timer: asyncio.TimerHandle | None = None
    hook_done: bool = False
    finishing: bool = False
    # Deaths since the last successful batch: a crash loop makes no progress.
    deaths: int = 0
    next_spawn_at: float = 0.0
    wanted: int = 0
    exited_ok: int = 0
    exited_failed: int = 0
    finished: bool = False
    # Batches per grant: as many as a worker handles in LEASE_TARGET_SECONDS.
    lease_size: int = 1

    @property
    def job_id(self) -> str:
        return self.job.job_id


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
        self.joblogs = joblogs
        self._launch_for = launch_for
        self._init_for = init_for
        self.runs: dict[str, JobRun] = {}
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._slots: set[int] = set()
        self.gpus = sorted(gpus or [])
        self.memory = memory or MemoryLimiter()
        self.metrics = metrics or Metrics()
        self._free_gpus = list(self.gpus)
        self._oom = OomDetector()
        self._spares = SparePool(config.state_path / "runtime" / "spare")
        self._workspaces = Workspaces(config.state_path / constants.WORKSPACES_DIR)
        self._workspace_of: dict[WorkerProcess, Workspace] = {}
        self._final_worker_counts: OrderedDict[str, dict[str, int]] = OrderedDict()
        self.draining = False
        self._forced = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Recover: leases of the previous daemon's workers are charged and re-queued."""
        # Workspaces of the previous daemon's workers (gone with it) are removed.
        await asyncio.to_thread(self._workspaces.sweep)
        expired = await self.store.expire_leases(
            math.inf, "the daemon stopped while this batch was being handled"
        )
        if expired:
            log.info("re-queued leases held when the daemon stopped", extra={"count": len(expired)})
        for job in await self.store.active_jobs():
            self.runs[job.job_id] = JobRun(job)
        self.metrics.leases_expired(expired, self.api_of)
        self._loop_task = self._spawn_task(self._loop(), "scheduler-loop")
        self._spawn_task(self._renew_leases(), "lease-renewal")
        self.wake()

    async def stop(self) -> None:
        """Drain: no new leases; in-flight batches get the grace period, then workers die."""
        self.draining = True
        # No scheduling pass may start a worker while we collect the ones to stop.
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        workers = [w for run in self.runs.values() for w in run.workers]
        for worker in workers:
            if not worker.leases and worker.state is not WorkerState.INITIALIZING:
                await worker.request_exit()
        exited: asyncio.Future[Any] = asyncio.ensure_future(
            asyncio.gather(*(worker.wait() for worker in workers))
        )
        forced: asyncio.Future[Any] = asyncio.ensure_future(self._forced.wait())
        await asyncio.wait(
            {exited, forced},
            timeout=self.config.worker_stop_grace,
            return_when=asyncio.FIRST_COMPLETED,
        )
        forced.cancel()
        exited.cancel()
        unfinished = [w for w in workers if w.process.returncode is None]
        await asyncio.gather(*(w.terminate(0.5) for w in unfinished))
        for worker in workers:
            await self.memory.release(worker.memory_group)
        for worker in unfinished:
            # Cut off by an operator's stop, not by the batch: no attempt is charged.
            if worker.leases:
                held = [(lease.seq, lease.token) for lease in worker.leases]
                await self.store.release(worker.job_id, held)
        await self._spares.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._workspaces.close()

    def wake(self) -> None:
        self._wake.set()

    def force_stop(self) -> None:
        """Stop waiting for in-flight batches (a second SIGTERM)."""
        self._forced.set()

    def _spawn_task(self, coro: Any, name: str) -> asyncio.Task[Any]:
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

    # -- requests from the HTTP layer --------------------------------------------------

    def admit(self, job: JobRecord) -> None:
        self.runs[job.job_id] = JobRun(job, wanted=min(job.workers, job.total_batch_count))
        self.wake()

    async def stop_job(self, job_id: str) -> None:
        run = self.runs.get(job_id)
        if run is None or run.finished:
            job = await self.store.get_job(job_id)
            if job is None:
                raise not_found(f"job {job_id} not found", "jobID")
            raise conflict(f"job {job_id} has already ended ({job.status})", "jobID")
        await self.finish(run, JobStatus.STOPPED)

    async def stop_api_jobs(self, api_name: str) -> list[str]:
        runs = [r for r in self.runs.values() if r.job.api_name == api_name and not r.finished]
        for run in runs:
            await self.finish(run, JobStatus.STOPPED, f"API {api_name} was deleted")
        return [run.job_id for run in runs]

    def _retire_run(self, run: JobRun) -> None:
        """Forget a finished job, keeping its final worker counts for status readers."""
        self.runs.pop(run.job_id, None)
        self._final_worker_counts[run.job_id] = self.worker_counts(run.job_id, run)
        while len(self._final_worker_counts) > constants.FINISHED_JOBS_REMEMBERED:
            self._final_worker_counts.popitem(last=False)

    def worker_details(self, job_id: str) -> list[dict[str, Any]]:
        run = self.runs.get(job_id)
        if run is None:
            return []
        return [
            {"slot": w.slot, "pid": w.pid, "state": str(w.state), "gpus": w.gpus}
            for w in sorted(run.workers, key=lambda w: w.slot)
        ]

    def worker_counts(self, job_id: str, run: JobRun | None = None) -> dict[str, int]:
        run = run or self.runs.get(job_id)
        if run is None:
            return dict(self._final_worker_counts.get(job_id, views.empty_worker_counts()))
        counts = views.empty_worker_counts()
        for worker in run.workers:
            if worker.state is WorkerState.INITIALIZING:
                counts["initializing"] += 1
            elif worker.state is WorkerState.RUNNING:
                counts["running"] += 1
        if not run.finished:
            counts["pending"] = max(0, run.wanted - len(run.workers))
        counts["succeeded"] = run.exited_ok
        counts["failed"] = run.exited_failed
        return counts

    def api_of(self, job_id: str) -> str:
        """The API of an unfinished job (for metrics labels)."""
        run = self.runs.get(job_id)
        return run.job.api_name if run is not None else "unknown"

    # -- allocate ----------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that races with the event being set, and the loop would never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(constants.SCHEDULER_IDLE_INTERVAL):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._allocate()
            except Exception:
                log.exception("scheduling pass failed")

    async def _allocate(self) -> None:
        if self.draining:
            return
        now = time.monotonic()
        free = self.config.max_workers - len(self._slots)
        starved = False
        for run in sorted(self.runs.values(), key=lambda r: (-r.job.priority, r.job.created_at)):
            if run.finished:
                if not run.workers:
                    self._retire_run(run)
                continue
            job = run.job
            if job.timeout is not None and time.time() >= job.created_at + job.timeout:
                await self.finish(run, JobStatus.TIMED_OUT, f"timed out after {job.timeout:g}s")
                continue
            if free <= 0 and not run.workers and job.status is JobStatus.PENDING:
                # Nothing could start it now: spare the queue counts of every waiting job.
                starved = True
                continue
            run.wanted = await self._wanted_workers(run)
            if run.finished or run.wanted <= len(run.workers):
                continue
            if run.next_spawn_at > now:
                continue
            count = min(run.wanted - len(run.workers), free)
            if count <= 0:
                starved = True
                continue
            for _ in range(count):
                if not await self._start_worker(run):
                    starved = True
                    break
                free -= 1
        await self._serve_all_parked(release_idle=starved)

    async def _wanted_workers(self, run: JobRun) -> int:
        counts = await self.store.counts(run.job_id)
        if counts.queued > 0:
            # More workers than queued batches would only start up to find nothing to do.
            return min(run.job.workers, len(run.workers) + counts.queued)
        if counts.leased > 0 or run.workers or run.completing is not None:
            return len(run.workers)
        # Every batch is terminal and nobody is left to run on_job_complete.
        if run.job.has_on_complete is False:
            await self._conclude(run, counts)
            return 0
        return 1

    async def _reload(self, run: JobRun) -> JobRecord:
        job = await self.store.get_job(run.job_id)
        assert job is not None
        return job

    async def _start_worker(self, run: JobRun) -> bool:
        """Start one worker for the job; False when it must wait for GPUs to free up (or
        for disk space for its workspace)."""
        slot = next(i for i in range(len(self._slots) + 1) if i not in self._slots)
        launch = await self._launch_for(run.job, slot)
        if launch.gpus > len(self._free_gpus):
            return False
        gpus, self._free_gpus = self._free_gpus[: launch.gpus], self._free_gpus[launch.gpus :]
        self._slots.add(slot)
        if run.job.status is JobStatus.PENDING:
            await self.store.set_status(run.job_id, JobStatus.RUNNING)
            run.job = await self._reload(run)
        group = self.memory.prepare(launch.mem)
        # Only its own GPUs are visible to a worker; none at all when it asked for none.
        env = {
            **launch.env,
            "CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus)),
            **self.memory.env_for(launch.mem, group),
        }
        job_log = self.joblogs.acquire(run.job_id)
        api = run.job.api_name
        sink = guarded_writer(job_log, run.job_id, partial(self.metrics.log_line_dropped, api))
        workspace: Workspace | None = None
        try:
            workspace = await self._workspaces.create(
                launch.cwd, f"{run.job_id}-{slot}", launch.disk
            )
            worker = await self._spares.spawn(
                replace(launch, cwd=workspace.project, env={**env, **workspace.env()}), sink
            )
        except OSError as exc:
            if workspace is not None:
                await self._workspaces.remove(workspace)
            self._release_slot(slot, gpus)
            self.joblogs.release(run.job_id)
            await self.memory.release(group)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                # No room for its workspace: the daemon's trouble, not the job's. Try again.
                log.warning(
                    "no disk space for a worker's workspace; retrying",
                    extra={"jobID": run.job_id, "error": str(exc)},
                )
                run.next_spawn_at = time.monotonic() + constants.STORAGE_RETRY_MAX
                self._spawn_task(self._wake_at(run.next_spawn_at), "workspace-retry")
                return False
            await self.finish(run, JobStatus.WORKER_ERROR, f"cannot start worker: {exc}")
            return True
        self._workspace_of[worker] = workspace
        self._spawn_task(self._watch_workspace(worker, workspace), f"workspace-{slot}")
        worker.gpus = gpus
        worker.memory_group = self.memory.attach(worker.pid, launch.mem, group)
        run.workers.add(worker)
        log.info(
            "worker started",
            extra={"jobID": run.job_id, "slot": slot, "pid": worker.pid, "gpus": gpus},
        )
        self._spawn_task(self._drive(run, worker), f"worker-{slot}")
        return True

    def _release_slot(self, slot: int, gpus: list[int]) -> None:
        self._slots.discard(slot)
        self._free_gpus = sorted({*self._free_gpus, *gpus})

    # -- one task per worker: its messages, then its exit ------------------------------

    async def _drive(self, run: JobRun, worker: WorkerProcess) -> None:
        try:
            init = await self._init_for(run.job)
            limit = self.config.max_result_size
            init_message = {"op": "init", "job_id": run.job_id, "max_result_bytes": limit, **init}
            await worker.send(protocol.encode(init_message))
            started = self._workspace_of.get(worker)
            while True:
                message = await worker.recv()
                await self._until_stored(partial(self._on_message, run, worker, message), run)
                if started is not None and message.get("token"):
                    # It reports on its first grant, so its first batch has begun: copying
                    # the next worker's workspace now takes no CPU from the worker's start.
                    self._workspaces.keep_ready(started.snapshot)
                    started = None
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except protocol.BadFrame as exc:
            # The worker's own message broke the channel: charged like a crash (_reap).
            log.warning("worker broke the channel", extra={"jobID": run.job_id, "error": str(exc)})
            worker.death_reason = f"the worker sent {exc}"
            worker.signal(signal.SIGKILL)
        except Exception:
            # Most likely the daemon's own failure (the disk is full): not the worker's, so
            # its exit is no crash and costs its batch nothing (see _reap).
            log.exception("worker channel failed", extra={"jobID": run.job_id})
            worker.killed = True
            worker.signal(signal.SIGKILL)
        finally:
            worker.close()
        returncode = await worker.wait()
        # What the handler left running (a setsid'd daemon) holds the output pipes open.
        self.memory.kill_leftovers(worker.memory_group)
        await worker.output_done()
        self.joblogs.release(run.job_id)
        try:
            await self._reap(run, worker, returncode)
        finally:
            worker.close_progress()
            workspace = self._workspace_of.pop(worker, None)
            if workspace is not None:
                await self._workspaces.remove(workspace)

    async def _watch_workspace(self, worker: WorkerProcess, workspace: Workspace) -> None:
        """Kill the worker once its workspace is over its disk limit (see _reap)."""
        if await workspace.watch(lambda: worker.process.returncode is None):
            worker.signal(signal.SIGKILL)

    async def _until_stored(self, step: Callable[[], Awaitable[None]], run: JobRun) -> None:
        """Run `step`, retrying while the store cannot write (disk full, locked): the
        worker waits for its answer instead of being blamed for the daemon's trouble.
        Every step is safe to repeat: stale lease tokens make repeated outcomes no-ops."""
        delay = constants.STORAGE_RETRY_INITIAL
        while True:
            try:
                await step()
                return
            except (sqlite3.OperationalError, OSError) as exc:
                if isinstance(exc, OSError) and exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                if self.draining or run.finished:
                    raise
                log.warning(
                    "cannot write to the queue; retrying",
                    extra={"jobID": run.job_id, "error": str(exc)},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, constants.STORAGE_RETRY_MAX)

    async def _on_message(
        self, run: JobRun, worker: WorkerProcess, message: dict[str, Any]
    ) -> None:
        op = message.get("op")
        if op in ("progress", "next"):
            # A report of outcomes; `next` (the grant is done) and `more` (halfway through
            # it) ask for the next grant, which goes out before the outcomes are stored so
            # the worker works while the daemon writes.
            reported = self._take_reported(worker, message)
            asking = op == "next" or bool(message.get("more"))
            granted = asking and await self._grant(run, worker)
            if message.get("more") and not granted:
                # The worker waits for an answer to `more`: an empty grant.
                await worker.send(_EMPTY_GRANT)
            await self._record(run, worker, message, reported)
            if op == "next" and not granted:
                await self._idle(run, worker)
        elif op == "ready":
            worker.state = WorkerState.RUNNING
            worker.has_on_complete = bool(message.get("has_on_complete"))
            if run.job.has_on_complete is None:
                await self.store.set_has_on_complete(run.job_id, worker.has_on_complete)
                run.job = await self._reload(run)
        elif op == "init_failed":
            error = f"Handler failed to initialise: {message.get('error')}"
            await self.finish(run, JobStatus.WORKER_ERROR, _with_traceback(error, message))
        elif op == "completed":
            await self._on_completed(run, worker, message)
        else:
            raise ValueError(f"unknown op {op!r} from worker")

    # -- record ------------------------------------------------------------------------

    @staticmethod
    def _take_reported(worker: WorkerProcess, message: dict[str, Any]) -> int:
        """Drop the batches a report covers from the worker's leases; how many it covers."""
        done, failed = message.get("done") or [], message.get("failed") or []
        count = len(done) + len(failed)
        if count:
            reported = {int(o[0]) for o in done} | {int(f["seq"]) for f in failed}
            worker.leases = [lease for lease in worker.leases if lease.seq not in reported]
            worker.batches_done += count
        return count

    async def _record(
        self, run: JobRun, worker: WorkerProcess, message: dict[str, Any], reported: int
    ) -> None:
        """Store the outcomes of a `progress` or `next` report ([seq, duration(, result)]
        per success, an object per failure), all under the grant's lease token; `reported`
        is what _take_reported counted of them."""
        if not reported:
            return
        token = int(message["token"])
        done, failed = message.get("done") or [], message.get("failed") or []
        successes = [
            Success(int(o[0]), token, float(o[1]), _result_bytes(o) if len(o) > 2 else None)
            for o in done
        ]
        self._adapt_lease_size(run, done, failed)
        if successes and (accepted := await self.store.succeed(run.job_id, successes)):
            run.deaths = 0
            self.metrics.batches_succeeded(run.job.api_name, successes, accepted)
        for outcome in failed:
            failure = Failure(
                int(outcome["seq"]), token, str(outcome.get("error")), outcome.get("traceback")
            )
            state = await self.store.fail(run.job_id, failure, run.job.max_receive_count)
            self.metrics.batch_failed(run.job.api_name, state)
        if run.parked:
            self._spawn_task(self._serve_parked(run), f"serve-parked-{run.job_id}")

    @staticmethod
    def _adapt_lease_size(run: JobRun, done: list[Any], failed: list[Any]) -> None:
        count = len(done) + len(failed)
        seconds = sum(float(o[1]) for o in done) + sum(float(f["duration"]) for f in failed)
        per_batch = max(seconds / count, 1e-6)
        run.lease_size = max(
            1, min(constants.MAX_LEASE_BATCHES, int(constants.LEASE_TARGET_SECONDS / per_batch))
        )

    def _grant_size(self, run: JobRun, worker: WorkerProcess) -> int:
        if run.job.batch_timeout is not None:
            # Each batch gets its own timer: one at a time.
            return 1
        share = run.job.total_batch_count // (
            max(1, len(run.workers)) * constants.LEASE_SHARE_DIVISOR
        )
        size = min(run.lease_size, max(1, share))
        recycle = self.config.max_batches_per_worker
        if recycle is not None:
            size = min(size, max(1, recycle - worker.batches_done - len(worker.leases)))
        return size

    # -- dispatch ----------------------------------------------------------------------

    def _may_lease(self, run: JobRun, worker: WorkerProcess) -> bool:
        recycle = self.config.max_batches_per_worker
        if run.finished or self.draining or worker.exit_requested:
            return False
        # A fresh worker replaces one that did its share: handlers that leak get a clean
        # process.
        return recycle is None or worker.batches_done + len(worker.leases) < recycle

    async def _grant(self, run: JobRun, worker: WorkerProcess) -> bool:
        """Lease the worker its next batches and send them; False when none were leased."""
        if not self._may_lease(run, worker):
            return False
        size = self._grant_size(run, worker)
        leases = await self.store.lease(run.job_id, size, self.config.lease_timeout)
        if not leases:
            return False
        await worker.send_batches(leases)
        if run.job.batch_timeout is not None:
            self._limit_batch(worker, leases[0], run.job.batch_timeout)
        return True

    async def _dispatch(self, run: JobRun, worker: WorkerProcess) -> None:
        if not await self._grant(run, worker):
            await self._idle(run, worker)

    async def _idle(self, run: JobRun, worker: WorkerProcess) -> None:
        """A worker that asked for batches got none: it exits, waits (parked), or runs
        on_job_complete, or the job ends."""
        recycle = self.config.max_batches_per_worker
        if run.finished or self.draining or worker.exit_requested:
            await worker.request_exit()
            return
        if recycle is not None and worker.batches_done >= recycle:
            await worker.request_exit()
            self.wake()
            return
        counts = await self.store.counts(run.job_id)
        if run.finished or self.draining:
            await worker.request_exit()
        elif counts.queued > 0:
            # Re-queued between our lease and our count: try again on the next pass.
            run.parked.append(worker)
            self.wake()
        elif counts.leased > 0:
            # Others still hold batches that may fail and come back: wait for them.
            run.parked.append(worker)
        elif run.completing is None and not run.hook_done and worker.has_on_complete:
            run.completing = worker
            status = views.job_status(run.job, counts, self.worker_counts(run.job_id))
            status["status"] = str(_final_status(counts))
            await worker.send(protocol.encode({"op": "complete", "status": status}))
            self._limit_hook(run, worker)
        elif run.completing is None and not run.hook_done:
            await self._conclude(run, counts)
        else:
            await worker.request_exit()

    async def _serve_parked(self, run: JobRun) -> None:
        parked, run.parked = run.parked, []
        for worker in parked:
            if worker.process.returncode is None:
                await self._dispatch(run, worker)

    async def _serve_all_parked(self, release_idle: bool) -> None:
        for run in list(self.runs.values()):
            if not run.parked:
                continue
            if release_idle:
                # Another job is waiting for capacity; idle workers give their slots up.
                parked, run.parked = run.parked, []
                for worker in parked:
                    await worker.request_exit()
            else:
                await self._serve_parked(run)

    async def _on_completed(
        self, run: JobRun, worker: WorkerProcess, message: dict[str, Any]
    ) -> None:
        run.completing = None
        if run.hook_timer is not None:
            run.hook_timer.cancel()
            run.hook_timer = None
        if message.get("ok"):
            run.hook_done = True
            await self._conclude(run, await self.store.counts(run.job_id))
        else:
            error = f"on_job_complete failed: {message.get('error')}"
            await self.finish(run, JobStatus.WORKER_ERROR, _with_traceback(error, message))

    async def _conclude(self, run: JobRun, counts: BatchCounts) -> None:
        await self.finish(run, _final_status(counts))

    def _limit_hook(self, run: JobRun, worker: WorkerProcess) -> None:
        """An on_job_complete still running after on_job_complete_timeout gets its worker
        killed; the job ends as its batches decided, saying why in its error and log."""
        limit = self.config.on_job_complete_timeout

        def expire() -> None:
            run.hook_timer = None
            if run.completing is worker and not run.finished:
                self._spawn_task(self._hook_timed_out(run, worker, limit), "hook-timeout")

        run.hook_timer = asyncio.get_running_loop().call_later(limit, expire)

    async def _hook_timed_out(self, run: JobRun, worker: WorkerProcess, limit: float) -> None:
        if run.completing is not worker or run.finished:
            return
        error = (
            f"on_job_complete did not finish within {limit:g}s (on_job_complete_timeout); "
            "its worker was killed"
        )
        log.warning("on_job_complete timed out", extra={"jobID": run.job_id, "limit": limit})
        worker.killed = True
        worker.signal(signal.SIGKILL)
        run.completing = None
        # Not run again by another worker: the job ends now.
        run.hook_done = True
        self._job_log_record(run, worker, "ERROR", error)
        await self.finish(run, _final_status(await self.store.counts(run.job_id)), error)

    def _job_log_record(self, run: JobRun, worker: WorkerProcess, level: str, message: str) -> None:
        """A record of the daemon's own in the job's log, labelled as the worker's."""
        job_log = self.joblogs.acquire(run.job_id)
        dropped = partial(self.metrics.log_line_dropped, run.job.api_name)
        try:
            guarded_writer(job_log, run.job_id, dropped)(
                {
                    "asctime": format_time(time.time()),
                    "levelname": level,
                    "message": message,
                    "process": worker.pid,
                    "labels": dict(worker.labels),
                }
            )
        finally:
            self.joblogs.release(run.job_id)

    # -- reap --------------------------------------------------------------------------

    async def _reap(self, run: JobRun, worker: WorkerProcess, returncode: int) -> None:
        run.workers.discard(worker)
        self._release_slot(worker.slot, worker.gpus)
        oom_in_group = self.memory.oom_killed(worker.memory_group)
        await self.memory.release(worker.memory_group)
        worker.memory_group = None
        if worker in run.parked:
            run.parked.remove(worker)
        worker.state = WorkerState.EXITED
        # Whatever the handler started dies with its worker.
        worker.signal_group(signal.SIGKILL)
        expected = worker.exit_requested or worker.killed or run.finished
        if expected and worker.leases and not run.finished:
            held = [(lease.seq, lease.token) for lease in worker.leases]
            with contextlib.suppress(Exception):
                await self.store.release(run.job_id, held)
        if expected or returncode == constants.WORKER_EXIT_INIT_FAILED:
            run.exited_ok += expected and returncode == 0
            run.exited_failed += not (expected and returncode == 0)
            self.wake()
            return
        run.exited_failed += 1
        workspace = self._workspace_of.get(worker)
        # Over its disk limit: a death like a crash (it counts toward the crash loop).
        over_disk = workspace.over_limit if workspace is not None else None
        oom = (worker.death_reason or over_disk) is None and (
            returncode == constants.WORKER_EXIT_OUT_OF_MEMORY
            or (
                self._oom.was_oom(returncode, worker.killed)
                if oom_in_group is None
                else oom_in_group
            )
        )
        reason = worker.death_reason or over_disk or describe_exit(returncode, oom)
        self.metrics.worker_died(run.job.api_name, oom)
        log.warning(
            "worker died",
            extra={"jobID": run.job_id, "slot": worker.slot, "pid": worker.pid, "reason": reason},
        )
        charged = await self._charge_leases(run, worker, reason)
        if run.completing is worker:
            run.completing = None
        # A batch over its time limit, or one whose report broke the channel, is that
        # batch's fault (it is charged an attempt), not a sign that workers cannot start:
        # it does not count toward the crash loop. Outside a batch, it does.
        if worker.death_reason is None or not charged:
            run.deaths += 1
        if run.deaths > self.config.max_worker_restarts:
            status = JobStatus.WORKER_OOM if oom else JobStatus.WORKER_ERROR
            await self.finish(
                run, status, f"workers died {run.deaths} times in a row; last: {reason}"
            )
            return
        backoff = self.config.restart_backoff * 2 ** (run.deaths - 1)
        run.next_spawn_at = time.monotonic() + min(backoff, self.config.max_restart_backoff)
        self._spawn_task(self._wake_at(run.next_spawn_at), "restart-backoff")
        self.wake()

    async def _charge_leases(self, run: JobRun, worker: WorkerProcess, reason: str) -> bool:
        """The batch the worker was running costs an attempt, and so does each one it
        finished without reporting (it ran: attempts never undercount calls); the ones it
        had not begun go back unburnt. A worker runs its grant in order, and the shared
        progress word says which batch it was in. True when a batch was charged."""
        if not worker.leases:
            return False
        held, worker.leases = worker.leases, []
        current_seq = worker.current_seq()
        started = next((i + 1 for i, lease in enumerate(held) if lease.seq == current_seq), 0)
        for lease in held[: started - 1]:
            unreported = Failure(
                lease.seq, lease.token, f"{reason}, before it reported this batch's outcome", None
            )
            state = await self.store.fail(run.job_id, unreported, run.job.max_receive_count)
            self.metrics.batch_failed(run.job.api_name, state)
        if started:
            current = held[started - 1]
            failure = Failure(current.seq, current.token, reason, None)
            state = await self.store.fail(run.job_id, failure, run.job.max_receive_count)
            self.metrics.batch_failed(run.job.api_name, state)
        if held[started:]:
            await self.store.release(
                run.job_id, [(lease.seq, lease.token) for lease in held[started:]]
            )
        if run.parked:
            await self._serve_parked(run)
        return started > 0

    def _limit_batch(self, worker: WorkerProcess, lease: Lease, limit: float) -> None:
        """A batch still running after `limit` seconds gets its worker killed."""

        def expire() -> None:
            if lease in worker.leases and worker.process.returncode is None:
                worker.death_reason = f"batch exceeded its time limit of {limit:g}s"
                worker.signal(signal.SIGKILL)

        asyncio.get_running_loop().call_later(limit, expire)

    async def _wake_at(self, when: float) -> None:
        await asyncio.sleep(max(0.0, when - time.monotonic()))
        self.wake()

    # -- finish ------------------------------------------------------------------------

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
                self._spawn_task(
                    worker.terminate(self.config.worker_stop_grace), f"stop-worker-{worker.slot}"
                )
        self.wake()

    # -- leases of live workers are renewed; lost ones expire ---------------------------

    async def _renew_leases(self) -> None:
        interval = self.config.lease_timeout / 3
        checkpoint_every = self.config.checkpoint_interval
        next_checkpoint = time.monotonic() + checkpoint_every
        while True:
            await asyncio.sleep(interval)
            if time.monotonic() >= next_checkpoint:
                next_checkpoint = time.monotonic() + checkpoint_every
                with contextlib.suppress(Exception):
                    await self.store.checkpoint()
            held = [
                (run.job_id, lease.seq, lease.token)
                for run in self.runs.values()
                for worker in run.workers
                for lease in worker.leases
            ]
            try:
                if held:
                    await self.store.renew(held, self.config.lease_timeout)
                # Only a job whose stored leases outnumber its workers' can have lost any.
                suspects = [
                    run.job_id
                    for run in list(self.runs.values())
                    if not run.finished
                    and (await self.store.counts(run.job_id)).leased
                    > sum(len(worker.leases) for worker in run.workers)
                ]
                expired = (
                    await self.store.expire_leases(time.time(), job_ids=suspects)
                    if suspects
                    else []
                )
                self.metrics.leases_expired(expired, self.api_of)
            except Exception:
                log.exception("lease renewal failed")
                continue
            if expired:
                log.warning("leases expired", extra={"count": len(expired)})
                self.wake()


_EMPTY_GRANT = protocol.encode({"op": "batches", "token": 0, "batches": []})


def _final_status(counts: BatchCounts) -> JobStatus:
    return JobStatus.COMPLETED_WITH_FAILURES if counts.dead else JobStatus.SUCCEEDED


def _with_traceback(error: str, message: dict[str, Any]) -> str:
    trace = message.get("traceback")
    return f"{error}\n{trace}" if trace else error


def _result_bytes(outcome: list[Any]) -> bytes:
    return json.dumps(outcome[2], separators=(",", ":"), ensure_ascii=False).encode()
