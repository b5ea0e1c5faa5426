"""What the scheduler keeps in memory: each unfinished job (JobRun), each of its workers
(WorkerRun: the bookkeeping next to the process handle), and the box's capacity.

Nothing here is durable: after a restart it is rebuilt from the store.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from batchd.observe.workers import WorkerExitEvent
from batchd.pool.exits import ExitCause, signal_name
from batchd.pool.memlimit import MemoryLimiter
from batchd.pool.process import WorkerProcess, WorkerState
from batchd.pool.workspace import Workspace
from batchd.store import views
from batchd.store.records import JobRecord, Lease


@dataclass(eq=False)
class WorkerRun:
    """One worker as the scheduler sees it; `handle` manages its process."""

    handle: WorkerProcess
    workspace: Workspace | None = None
    state: WorkerState = WorkerState.INITIALIZING
    has_on_complete: bool = False
    # It said it was ready: its Handler was loaded and constructed.
    ready: bool = False
    # Leases handed over and not yet reported on, in the order the worker runs them.
    leases: list[Lease] = field(default_factory=list)
    batches_done: int = 0
    exit_requested: bool = False
    # Killed by the daemon for a reason of its own: its exit is no crash.
    killed: bool = False
    # Set when the daemon kills the worker for a reason of the batch's own making.
    death_reason: str | None = None
    death_cause: ExitCause | None = None
    # Its slot among the job's workers over every node (store.claim_worker).
    claim: int | None = None

    def __post_init__(self) -> None:
        self.handle.held_seq = self.held_seq

    @property
    def slot(self) -> int:
        return self.handle.slot

    @property
    def pid(self) -> int:
        return self.handle.pid

    @property
    def gpus(self) -> list[int]:
        return self.handle.gpus

    @property
    def alive(self) -> bool:
        return self.handle.process.returncode is None

    def held_seq(self) -> int | None:
        """The batch it is on, for labelling its output; None when it holds none."""
        if not self.leases:
            return None
        return self.handle.current_seq() or self.leases[0].seq

    def exit_event(
        self,
        job: JobRecord,
        returncode: int,
        cause: ExitCause,
        reason: str,
        restart_in: float | None = None,
    ) -> WorkerExitEvent:
        return WorkerExitEvent(
            time=time.time(),
            api_name=job.api_name,
            job_id=job.job_id,
            slot=self.slot,
            pid=self.pid,
            cause=str(cause),
            exit_code=returncode if returncode >= 0 else None,
            signal=signal_name(returncode),
            reason=reason,
            restart_in=restart_in,
        )

    async def send_batches(self, leases: list[Lease]) -> None:
        self.leases.extend(leases)
        await self.handle.send_batches(leases)

    async def request_exit(self) -> None:
        self.exit_requested = True
        self.state = WorkerState.STOPPING
        await self.handle.request_exit()

    async def terminate(self, grace: float) -> None:
        """SIGTERM, then SIGKILL if it is still alive after `grace` seconds."""
        self.killed = True
        self.state = WorkerState.STOPPING
        await self.handle.terminate(grace)


@dataclass
class JobRun:
    """In-memory state of one unfinished job."""

    job: JobRecord
    workers: set[WorkerRun] = field(default_factory=set)
    parked: list[WorkerRun] = field(default_factory=list)
    completing: WorkerRun | None = None
    # Kills the worker running on_job_complete once on_job_complete_timeout has passed.
    hook_timer: asyncio.TimerHandle | None = None
    hook_done: bool = False
    # Another node runs (or ran) on_job_complete: no worker here is started for it.
    hook_elsewhere: bool = False
    # Its workers are all taken on other nodes: not asked again before this (monotonic).
    claim_retry_at: float = 0.0
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

    def worker_counts(self) -> dict[str, int]:
        counts = views.empty_worker_counts()
        for worker in self.workers:
            if worker.state is WorkerState.INITIALIZING:
                counts["initializing"] += 1
            elif worker.state is WorkerState.RUNNING:
                counts["running"] += 1
        if not self.finished:
            counts["pending"] = max(0, self.wanted - len(self.workers))
        counts["succeeded"] = self.exited_ok
        counts["failed"] = self.exited_failed
        return counts


class Capacity:
    """Worker slots (max_workers), the GPUs free to hand out, and memory groups."""

    def __init__(self, max_workers: int, gpus: list[int], memory: MemoryLimiter) -> None:
        self.max_workers = max_workers
        self.gpus = sorted(gpus)
        self.memory = memory
        self._slots: set[int] = set()
        self._free_gpus = list(self.gpus)

    @property
    def free_slots(self) -> int:
        return self.max_workers - len(self._slots)

    def next_slot(self) -> int:
        return next(i for i in range(len(self._slots) + 1) if i not in self._slots)

    def take(self, slot: int, gpus: int) -> list[int] | None:
        """Take `slot` and `gpus` free GPUs (which ones); None when too few are free."""
        if gpus > len(self._free_gpus):
            return None
        taken, self._free_gpus = self._free_gpus[:gpus], self._free_gpus[gpus:]
        self._slots.add(slot)
        return taken

    def release(self, slot: int, gpus: list[int]) -> None:
        self._slots.discard(slot)
        self._free_gpus = sorted({*self._free_gpus, *gpus})
