"""Scheduling decisions, as pure functions: no I/O, no asyncio, no processes.

The allocator and the driver gather the facts (the queue's counts, what a worker holds,
how long its batches took) and act on the answers given here: how many batches a grant
holds, what a worker does when there is nothing to lease, which batches a worker's death
costs an attempt, and how a job whose batches are all done ends. They are unit-tested with
plain values (tests/scheduler/test_policy.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import NamedTuple

from batchd import constants
from batchd.store.records import BatchCounts, JobStatus, Lease

# -- workers wanted ----------------------------------------------------------------------------


def wanted_workers(
    *,
    workers: int,
    live: int,
    counts: BatchCounts,
    hook_running: bool,
    has_on_complete: bool | None,
    paused: bool = False,
) -> int | None:
    """How many workers a job wants: `workers` is what it asked for, `live` how many it has;
    `has_on_complete` is None until a worker said. None: the job is done and ends now.
    A paused job starts no worker for its queued batches; its last batches ending still
    end it."""
    if counts.queued > 0 and paused:
        return live
    if counts.queued > 0:
        # More workers than queued batches would only start up to find nothing to do.
        return min(workers, live + counts.queued)
    if counts.leased > 0 or live or hook_running:
        return live
    # Every batch is terminal and nobody is left to run on_job_complete.
    if has_on_complete is False:
        return None
    return 1


# -- grants ----------------------------------------------------------------------------------


def may_lease(*, stopping: bool, recycle: int | None, batches_done: int, held: int) -> bool:
    """Whether a worker asking for work may be leased more. `stopping`: its job ended,
    the daemon drains, or the worker was told to exit; `recycle`: max_batches_per_worker."""
    if stopping:
        return False
    # A fresh worker replaces one that did its share: handlers that leak get a clean process.
    return recycle is None or batches_done + held < recycle


def grant_size(
    *,
    lease_size: int,
    total_batches: int,
    workers: int,
    batch_timeout: float | None,
    recycle: int | None,
    batches_done: int,
    held: int,
) -> int:
    """Batches in a worker's next grant: the job's lease size (see lease_size_for), but no
    more than a 1/LEASE_SHARE_DIVISOR share of the job per worker (the tail of a job is
    spread over its workers), nor more than the worker has left before it is recycled."""
    if batch_timeout is not None:
        # Each batch gets its own timer: one at a time.
        return 1
    share = total_batches // (max(1, workers) * constants.LEASE_SHARE_DIVISOR)
    size = min(lease_size, max(1, share))
    if recycle is not None:
        size = min(size, max(1, recycle - batches_done - held))
    return size


def lease_size_for(seconds: float, batches: int) -> int:
    """Batches per grant from a report of `batches` that took `seconds` together: as many
    as a worker handles in LEASE_TARGET_SECONDS, between 1 and MAX_LEASE_BATCHES."""
    per_batch = max(seconds / batches, 1e-6)
    return max(1, min(constants.MAX_LEASE_BATCHES, int(constants.LEASE_TARGET_SECONDS / per_batch)))


# -- a worker that asked for batches and got none ----------------------------------------------


class Idle(Enum):
    EXIT = "exit"
    # Exit: it did its share (max_batches_per_worker); a fresh worker takes its place.
    RECYCLE = "recycle"
    # Park, and try again on the next pass: batches were re-queued since the lease.
    RETRY = "retry"
    # Park until the batches others hold end: they may fail and come back.
    WAIT = "wait"
    RUN_HOOK = "run_hook"
    # Every batch is terminal and no worker runs on_job_complete: the job ends now.
    CONCLUDE = "conclude"


def idle_before_counts(*, stopping: bool, recycle: int | None, batches_done: int) -> Idle | None:
    """What an idle worker does when that needs no queue counts; None: count, then ask
    idle_after_counts."""
    if stopping:
        return Idle.EXIT
    if recycle is not None and batches_done >= recycle:
        return Idle.RECYCLE
    return None


def idle_after_counts(
    *,
    stopping: bool,
    counts: BatchCounts,
    hook_free: bool,
    has_on_complete: bool,
    paused: bool = False,
) -> Idle:
    """What an idle worker does, given the job's counts. `hook_free`: nobody runs or ran
    on_job_complete; `has_on_complete`: this worker's handler has one; `paused`: the job's
    leasing is paused."""
    if stopping:
        return Idle.EXIT
    if counts.queued > 0:
        # Paused: it waits for the resume's wake, not retrying at once.
        return Idle.WAIT if paused else Idle.RETRY
    if counts.leased > 0:
        return Idle.WAIT
    if hook_free and has_on_complete:
        return Idle.RUN_HOOK
    if hook_free:
        return Idle.CONCLUDE
    return Idle.EXIT


# -- a worker that died ------------------------------------------------------------------------


class Charges(NamedTuple):
    """What a dead worker's leases become."""

    # Ran to the end without a report: an attempt each (attempts never undercount calls).
    unreported: list[Lease]
    # The one it was running: an attempt, failed with the death's reason.
    current: Lease | None
    # Not begun: released, unburnt.
    unstarted: list[Lease]


def death_charges(held: Sequence[Lease], current_seq: int | None) -> Charges:
    """A worker runs its grants in order, and its progress word (`current_seq`) says which
    batch it began last: that one, and the ones before it, ran."""
    started = next((i + 1 for i, lease in enumerate(held) if lease.seq == current_seq), 0)
    if not started:
        return Charges([], None, list(held))
    return Charges(list(held[: started - 1]), held[started - 1], list(held[started:]))


def counts_toward_crash_loop(death_reason: str | None, charged: bool) -> bool:
    """A batch over its time limit, or one whose report broke the channel, is that batch's
    fault (it is charged an attempt), not a sign that workers cannot start. Outside a
    batch, it is."""
    return death_reason is None or not charged


def restart_delay(deaths: int, backoff: float, max_backoff: float) -> float:
    """Seconds before the next worker starts after `deaths` deaths in a row."""
    return min(backoff * 2.0 ** (deaths - 1), max_backoff)


# -- a job whose batches are all done ----------------------------------------------------------


def final_status(counts: BatchCounts) -> JobStatus:
    return JobStatus.COMPLETED_WITH_FAILURES if counts.dead else JobStatus.SUCCEEDED
