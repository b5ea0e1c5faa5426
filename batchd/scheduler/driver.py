"""One task per worker runs its conversation: init, then each report answered with the
next grant (or, when there is none, what policy.idle_* decides: park, exit, run
on_job_complete, end the job), then its exit accounted for (reap) and the batches it held
charged as policy.death_charges says.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import sqlite3
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from batchd import constants
from batchd.pool.exits import ExitCause, OomDetector, describe_exit, exit_cause
from batchd.pool.process import WorkerState
from batchd.pool.workspace import Workspace, Workspaces
from batchd.scheduler import policy
from batchd.scheduler.hook import Hook, with_traceback
from batchd.scheduler.jobs import Jobs
from batchd.scheduler.state import Capacity, JobRun, WorkerRun
from batchd.store import DatabaseUnavailable
from batchd.store.records import Failure, HookClaim, JobRecord, JobStatus, Lease
from batchd.wire import framing
from batchd.wire.messages import (
    EMPTY_GRANT,
    Completed,
    FromWorker,
    Init,
    InitFailed,
    Next,
    Progress,
    Ready,
    Report,
)

log = logging.getLogger("batchd.scheduler")

InitFactory = Callable[[JobRecord], Awaitable[dict[str, Any]]]


class Driver:
    def __init__(
        self, jobs: Jobs, capacity: Capacity, workspaces: Workspaces, init_for: InitFactory
    ) -> None:
        self.jobs = jobs
        self.config = jobs.config
        self.store = jobs.store
        self.capacity = capacity
        self.workspaces = workspaces
        self._init_for = init_for
        self._oom = OomDetector()
        self._hook = Hook(jobs)

    async def drive(self, run: JobRun, worker: WorkerRun) -> None:
        handle = worker.handle
        try:
            init = await self._init_for(run.job)
            limit = self.config.max_result_size
            await handle.send(Init(**init, job_id=run.job_id, max_result_bytes=limit).encode())
            started = worker.workspace
            while True:
                message = await handle.receive()
                if isinstance(message, (Report, Completed)) and message.metrics is not None:
                    self.jobs.metrics.handler_recorded(run.job.api_name, message.metrics)
                await self._until_stored(partial(self._on_message, run, worker, message), run)
                if started is not None and isinstance(message, Report) and message.token:
                    # It reports on its first grant, so its first batch has begun: copying
                    # the next worker's workspace now takes no CPU from the worker's start.
                    self.workspaces.keep_ready(started.snapshot)
                    started = None
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except framing.BadFrame as exc:
            # The worker's own message broke the channel: charged like a crash (_reap).
            log.warning("worker broke the channel", extra={"jobID": run.job_id, "error": str(exc)})
            worker.death_reason = f"the worker sent {exc}"
            worker.death_cause = ExitCause.PROTOCOL_ERROR
            handle.signal(signal.SIGKILL)
        except DatabaseUnavailable:
            # The database down where nothing retries (a stop under way, the worker's
            # init): stopped, not blamed. What it reported and was not stored is charged
            # when its lease expires, or at the next start.
            worker.killed = True
            handle.signal(signal.SIGKILL)
        except Exception:
            # Most likely the daemon's own failure (the disk is full): not the worker's, so
            # its exit is no crash and costs its batch nothing (see _reap).
            log.exception("worker channel failed", extra={"jobID": run.job_id})
            worker.killed = True
            handle.signal(signal.SIGKILL)
        finally:
            handle.close()
        returncode = await handle.wait()
        # What the handler left running (a setsid'd daemon) holds the output pipes open.
        self.capacity.memory.kill_leftovers(handle.memory_group)
        await handle.output_done()
        self.jobs.joblogs.release(run.job_id)
        try:
            await self._reap(run, worker, returncode)
        finally:
            handle.close_progress()
            workspace, worker.workspace = worker.workspace, None
            if workspace is not None:
                await self.workspaces.remove(workspace)

    async def watch_workspace(self, worker: WorkerRun, workspace: Workspace) -> None:
        """Kill the worker once its workspace is over its disk limit (see _reap)."""
        if await workspace.watch(lambda: worker.alive):
            worker.handle.signal(signal.SIGKILL)

    async def _until_stored(self, step: Callable[[], Awaitable[None]], run: JobRun) -> None:
        """Run `step`, retrying while the store cannot write (disk full, locked, its
        database server down): the worker waits for its answer, its outcomes held here,
        instead of being blamed for the daemon's trouble. Every step is safe to repeat:
        stale lease tokens make repeated outcomes no-ops."""
        delay = constants.STORAGE_RETRY_INITIAL
        while True:
            try:
                await step()
                return
            except (sqlite3.OperationalError, OSError, DatabaseUnavailable) as exc:
                if isinstance(exc, OSError) and exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                if self.jobs.draining or run.finished:
                    raise
                if not isinstance(exc, DatabaseUnavailable):  # the store logs an outage once
                    log.warning(
                        "cannot write to the queue; retrying",
                        extra={"jobID": run.job_id, "error": str(exc)},
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, constants.STORAGE_RETRY_MAX)

    async def _on_message(self, run: JobRun, worker: WorkerRun, message: FromWorker) -> None:
        if isinstance(message, Report):
            # A report of outcomes; `next` (the grant is done) and `more` (halfway through
            # it) ask for the next grant, which goes out before the outcomes are stored so
            # the worker works while the daemon writes.
            reported = self._take_reported(worker, message)
            last = isinstance(message, Next)
            more = isinstance(message, Progress) and message.more
            granted = (last or more) and await self._grant(run, worker)
            if more and not granted:
                # The worker waits for an answer to `more`: an empty grant.
                await worker.handle.send(EMPTY_GRANT)
            try:
                await self._record(run, worker, message, reported)
            except DatabaseUnavailable:
                await self._record_after_outage(run, worker, message, reported)
            if last and not granted:
                await self._idle(run, worker)
        elif isinstance(message, Ready):
            worker.state = WorkerState.RUNNING
            worker.ready = True
            worker.has_on_complete = message.has_on_complete
            if run.job.has_on_complete is None:
                await self.store.set_has_on_complete(run.job_id, worker.has_on_complete)
                run.job = await self.jobs.reload(run)
        elif isinstance(message, InitFailed):
            error = f"Handler failed to initialise: {message.error}"
            await self.jobs.finish(
                run, JobStatus.WORKER_ERROR, with_traceback(error, message.traceback)
            )
        elif isinstance(message, Completed):
            await self._hook.completed(run, message)

    # -- record ------------------------------------------------------------------------

    @staticmethod
    def _take_reported(worker: WorkerRun, report: Report) -> int:
        """Drop the batches a report covers from the worker's leases; how many it covers."""
        count = len(report.done) + len(report.failed)
        if count:
            reported = report.seqs()
            worker.leases = [lease for lease in worker.leases if lease.seq not in reported]
            worker.batches_done += count
        return count

    async def _record(self, run: JobRun, worker: WorkerRun, report: Report, reported: int) -> None:
        """Store the outcomes of a `progress` or `next` report, all under the grant's lease
        token; `reported` is what _take_reported counted of them."""
        if not reported:
            return
        successes = report.successes()
        run.lease_size = policy.lease_size_for(report.seconds(), reported)
        if successes and (accepted := await self.store.succeed(run.job_id, successes)):
            run.deaths = 0
            self.jobs.metrics.batches_succeeded(run.job.api_name, successes, accepted)
        for failed in report.failures():
            failure = Failure(failed.seq, failed.token, failed.error, failed.traceback)
            state = await self.store.fail(run.job_id, failure, run.job.max_receive_count)
            self.jobs.metrics.batch_failed(run.job.api_name, state)
        if run.parked:
            self.jobs.spawn_task(self.serve_parked(run), f"serve-parked-{run.job_id}")

    async def _record_after_outage(
        self, run: JobRun, worker: WorkerRun, report: Report, reported: int
    ) -> None:
        """_record, retried until the database is back: alone, since a retry of the whole
        message would send a second grant. Meanwhile the report's leases are the worker's
        again, so the lease renewal keeps them: an outage longer than the leases does not
        make its outcomes stale. (What a lease holds besides its batch and token is not
        used of them.)"""
        held = [Lease(run.job_id, seq, report.token, 0, b"") for seq in report.seqs()]
        worker.leases += held
        await self._until_stored(partial(self._record, run, worker, report, reported), run)
        worker.leases = [lease for lease in worker.leases if lease not in held]

    # -- dispatch ----------------------------------------------------------------------

    async def _grant(self, run: JobRun, worker: WorkerRun) -> bool:
        """Lease the worker its next batches and send them; False when none were leased."""
        recycle = self.config.max_batches_per_worker
        held = len(worker.leases)
        stopping = run.finished or self.jobs.draining or worker.exit_requested
        if run.job.paused or not policy.may_lease(
            stopping=stopping, recycle=recycle, batches_done=worker.batches_done, held=held
        ):
            return False
        size = policy.grant_size(
            lease_size=run.lease_size,
            total_batches=run.job.total_batch_count,
            workers=len(run.workers),
            batch_timeout=run.job.batch_timeout,
            recycle=recycle,
            batches_done=worker.batches_done,
            held=held,
        )
        leases = await self.store.lease(run.job_id, size, self.config.lease_timeout)
        if not leases:
            return False
        await worker.send_batches(leases)
        if run.job.batch_timeout is not None:
            self._limit_batch(worker, leases[0], run.job.batch_timeout)
        return True

    async def _idle(self, run: JobRun, worker: WorkerRun) -> None:
        """A worker that asked for batches got none: it exits, waits (parked), or runs
        on_job_complete, or the job ends."""
        action = policy.idle_before_counts(
            stopping=run.finished or self.jobs.draining or worker.exit_requested,
            recycle=self.config.max_batches_per_worker,
            batches_done=worker.batches_done,
        )
        if action is None:
            counts = await self.store.counts(run.job_id)
            action = policy.idle_after_counts(
                stopping=run.finished or self.jobs.draining,
                counts=counts,
                hook_free=run.completing is None and not (run.hook_done or run.hook_elsewhere),
                has_on_complete=worker.has_on_complete,
                paused=bool(run.job.paused),
            )
            if action is policy.Idle.RUN_HOOK:
                # Taken here before the claim's await: no other idle worker takes it too.
                run.completing = worker
                try:
                    claim = await self.store.claim_hook(run.job_id)
                except BaseException:
                    # The store failed (an outage: the message is retried): not taken.
                    run.completing = None
                    raise
                if claim is HookClaim.CLAIMED:
                    await self._hook.run(run, worker, counts)
                    return
                # Another node runs it (or ran it, and was lost: see cluster.Membership).
                run.completing = None
                run.hook_elsewhere = True
                action = policy.Idle.EXIT
            if action is policy.Idle.CONCLUDE:
                await self.jobs.conclude(run, counts)
                return
        if action is policy.Idle.RETRY or action is policy.Idle.WAIT:
            run.parked.append(worker)
        else:
            await worker.request_exit()
        if action is policy.Idle.RETRY or action is policy.Idle.RECYCLE:
            self.jobs.wake()

    async def serve_parked(self, run: JobRun) -> None:
        parked, run.parked = run.parked, []
        for served, worker in enumerate(parked):
            try:
                if worker.alive and not await self._grant(run, worker):
                    await self._idle(run, worker)
            except DatabaseUnavailable:
                # Parked again, for a scheduling pass once the database is back.
                run.parked += [w for w in parked[served:] if w not in run.parked]
                return

    # -- reap --------------------------------------------------------------------------

    async def _reap(self, run: JobRun, worker: WorkerRun, returncode: int) -> None:
        handle, memory = worker.handle, self.capacity.memory
        # Whatever the handler started dies with its worker, first thing.
        handle.signal_group(signal.SIGKILL)
        run.workers.discard(worker)
        self.capacity.release(worker.slot, worker.gpus)
        if worker.claim is not None:
            claim, worker.claim = worker.claim, None
            release = partial(self.store.release_worker, run.job_id, claim)
            try:
                # Through an outage too: a slot not given back counts against the job's
                # workers on every node.
                await self._until_stored(release, run)
            except Exception as exc:
                # The job ended or this node drains: its slots go with it (leave, sweep).
                log.warning(
                    "cannot give a worker slot back", extra={"jobID": run.job_id, "error": str(exc)}
                )
        oom_in_group = memory.oom_killed(handle.memory_group)
        await memory.release(handle.memory_group)
        handle.memory_group = None
        if worker in run.parked:
            run.parked.remove(worker)
        worker.state = WorkerState.EXITED
        expected = worker.exit_requested or worker.killed or run.finished
        if expected and worker.leases and not run.finished:
            held = [(lease.seq, lease.token) for lease in worker.leases]
            with contextlib.suppress(Exception):
                await self.store.release(run.job_id, held)
        # Exit code 3 means "could not load the Handler" only before it was up; after that it
        # is the handler's own, and its leases are charged like any crash's.
        init_failed = returncode == constants.WORKER_EXIT_INIT_FAILED and not worker.ready
        if expected or init_failed:
            cause = exit_cause(returncode, oom=False, killed=worker.killed, ready=worker.ready)
            exited = worker.exit_event(run.job, returncode, cause, describe_exit(returncode, False))
            self.jobs.history.record(exited)
            run.exited_ok += expected and returncode == 0
            run.exited_failed += not (expected and returncode == 0)
            self.jobs.wake()
            return
        run.exited_failed += 1
        workspace = worker.workspace
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
        death_cause = worker.death_cause or (ExitCause.DISK_LIMIT if over_disk else None)
        cause = exit_cause(
            returncode, oom=oom, killed=False, ready=worker.ready, death_cause=death_cause
        )
        self.jobs.metrics.worker_died(run.job.api_name, oom)
        log.warning(
            "worker died",
            extra={"jobID": run.job_id, "slot": worker.slot, "pid": worker.pid, "reason": reason},
        )
        charged = await self._charge_leases(run, worker, reason)
        if run.completing is worker:
            run.completing = None
        if policy.counts_toward_crash_loop(worker.death_reason, charged):
            run.deaths += 1
        if run.deaths > self.config.max_worker_restarts:
            self.jobs.history.record(worker.exit_event(run.job, returncode, cause, reason))
            status = JobStatus.WORKER_OOM if oom else JobStatus.WORKER_ERROR
            await self.jobs.finish(
                run, status, f"workers died {run.deaths} times in a row; last: {reason}"
            )
            return
        delay = policy.restart_delay(
            run.deaths, self.config.restart_backoff, self.config.max_restart_backoff
        )
        run.next_spawn_at = time.monotonic() + delay
        self.jobs.history.record(worker.exit_event(run.job, returncode, cause, reason, delay))
        self.jobs.spawn_task(self.jobs.wake_at(run.next_spawn_at), "restart-backoff")
        self.jobs.wake()

    async def _charge_leases(self, run: JobRun, worker: WorkerRun, reason: str) -> bool:
        """Charge the batches a dead worker held as policy.death_charges says; True when
        the one it was running was charged."""
        if not worker.leases:
            return False
        held, worker.leases = worker.leases, []
        charges = policy.death_charges(held, worker.handle.current_seq())
        api, max_receive_count = run.job.api_name, run.job.max_receive_count
        for lease in charges.unreported:
            unreported = Failure(
                lease.seq, lease.token, f"{reason}, before it reported this batch's outcome", None
            )
            state = await self.store.fail(run.job_id, unreported, max_receive_count)
            self.jobs.metrics.batch_failed(api, state)
        if charges.current is not None:
            failure = Failure(charges.current.seq, charges.current.token, reason, None)
            state = await self.store.fail(run.job_id, failure, max_receive_count)
            self.jobs.metrics.batch_failed(api, state)
        if charges.unstarted:
            await self.store.release(
                run.job_id, [(lease.seq, lease.token) for lease in charges.unstarted]
            )
        if run.parked:
            await self.serve_parked(run)
        return charges.current is not None

    def _limit_batch(self, worker: WorkerRun, lease: Lease, limit: float) -> None:
        """A batch still running after `limit` seconds gets its worker killed."""

        def expire() -> None:
            if lease in worker.leases and worker.alive:
                worker.death_reason = f"batch exceeded its time limit of {limit:g}s"
                worker.death_cause = ExitCause.BATCH_TIMEOUT
                worker.handle.signal(signal.SIGKILL)

        asyncio.get_running_loop().call_later(limit, expire)
