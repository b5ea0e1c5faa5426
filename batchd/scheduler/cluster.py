"""This node among the daemons sharing one queue (PostgreSQL): it heartbeats its row,
sweeps the nodes that fell silent, and keeps its unfinished jobs in step with the
queue's: a job admitted on another node is adopted here, one stopped, timed out or
finished elsewhere is ended here. A notification from the database brings a change at
once; the same pass runs every CLUSTER_SYNC_INTERVAL regardless, so a lost notification
costs at most that long.

A node that finds it was swept (it was silent past node_timeout: stopped, partitioned)
is fenced: its leases were expired and handed on, so its workers are killed (their
outcomes would be refused anyway) and it joins again as a new node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from pathlib import Path

from batchd import constants
from batchd.scheduler import policy
from batchd.scheduler.jobs import Jobs
from batchd.scheduler.state import JobRun
from batchd.store.records import Expired, HookClaim, JobRecord

log = logging.getLogger("batchd.cluster")

MACHINE_ID = Path("/etc/machine-id")


def instance_of(state_path: Path) -> str:
    """This machine and state directory: a later run of the same node finds its rows."""
    try:
        machine = MACHINE_ID.read_text().strip() or socket.gethostname()
    except OSError:
        machine = socket.gethostname()
    return f"{machine}:{state_path}"


class Membership:
    def __init__(self, jobs: Jobs, gpus: int) -> None:
        self.jobs = jobs
        self.config = jobs.config
        self.store = jobs.store
        self._gpus = gpus
        self._changed = asyncio.Event()
        # Sweeping waits until this node has heartbeated for node_timeout without a break:
        # after an outage of the database, every node gets to say it is alive first.
        self._healthy_since: float | None = None
        self._unreachable = False

    async def join(self) -> Expired:
        config = self.config
        return await self.store.join(
            config.node_name,
            instance_of(config.state_path),
            (config.max_workers, self._gpus),
            config.node_timeout,
            "the daemon stopped while this batch was being handled",
        )

    def changed(self, job_id: str = "") -> None:
        self._changed.set()

    async def run_forever(self) -> None:
        interval = min(constants.CLUSTER_SYNC_INTERVAL, self.config.node_timeout / 5)
        # The first pass at once: listening starts before the first job is submitted here.
        self._changed.set()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._changed.wait()
            self._changed.clear()
            try:
                await self.store.listen_jobs(self.changed)
                await self._beat()
                await self.sync()
            except Exception as exc:
                self._healthy_since = None
                if not self._unreachable:
                    # Once per outage; the store's reconnects say the rest.
                    log.warning("cannot reach the shared queue", extra={"error": str(exc)})
                self._unreachable = True
            else:
                if self._unreachable:
                    log.info("the shared queue is reachable again")
                self._unreachable = False

    async def _beat(self) -> None:
        if not await self.store.heartbeat():
            await self._fenced()
            return
        now = time.monotonic()
        if self._healthy_since is None:
            self._healthy_since = now
        if now - self._healthy_since < self.config.node_timeout:
            return
        swept, expired = await self.store.sweep_lost(self.config.node_timeout)
        if swept:
            log.warning(
                "nodes lost: their leases expired and their worker slots freed",
                extra={"nodes": swept, "leases": len(expired)},
            )
        if expired:
            self.jobs.metrics.leases_expired(expired, self.jobs.api_of)
            self.jobs.wake()

    async def _fenced(self) -> None:
        """Another node found this one silent and handed its work on: start over."""
        log.error(
            "this node was silent past node_timeout and was declared lost; "
            "its workers are stopped and it joins again",
            extra={"node": self.config.node_name},
        )
        self._healthy_since = None
        workers = [w for run in self.jobs.runs.values() for w in run.workers]
        # Their leases are gone: whatever they report would be refused.
        await asyncio.gather(*(worker.terminate(0) for worker in workers))
        await self.join()
        self.jobs.wake()

    async def sync(self) -> None:
        """Adopt the jobs admitted elsewhere; end here the ones that ended elsewhere."""
        runs = self.jobs.runs
        active = {job.job_id: job for job in await self.store.active_jobs()}
        for job_id, job in active.items():
            if job_id not in runs and not self.jobs.draining and not self.jobs.retired(job_id):
                runs[job_id] = JobRun(job)
                self.jobs.wake()
        for run in list(runs.values()):
            if run.finished or run.finishing:
                continue
            if run.job_id not in active:
                # Not active in a read that may predate its admission: ask again.
                stored = await self.store.get_job(run.job_id)
                if stored is not None and stored.status.terminal:
                    await self.jobs.finish(run, stored.status)
            elif run.hook_elsewhere and not run.workers:
                await self._check_hook(run)
            elif paused_changed(run.job, active[run.job_id]):
                # Paused or resumed on another node: this one follows.
                run.job = active[run.job_id]
                self.jobs.wake()

    async def _check_hook(self, run: JobRun) -> None:
        """The node running the job's on_job_complete was lost: the job ends here."""
        if await self.store.claim_hook(run.job_id) is not HookClaim.LOST:
            return
        counts = await self.store.counts(run.job_id)
        await self.jobs.finish(
            run,
            policy.final_status(counts),
            "on_job_complete was running on a node that was lost; it is not run again",
        )


def paused_changed(known: JobRecord, stored: JobRecord) -> bool:
    return (known.paused, known.paused_seconds) != (stored.paused, stored.paused_seconds)
