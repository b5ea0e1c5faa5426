"""The scheduler's decisions (batchd/scheduler/policy.py) and its capacity accounting, with
plain values: no daemon, no process, no event loop."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchd import constants
from batchd.pool.memlimit import MemoryLimiter
from batchd.scheduler import policy
from batchd.scheduler.policy import Charges, Idle
from batchd.scheduler.state import Capacity
from batchd.store.records import BatchCounts, JobStatus, Lease


def counts(queued: int = 0, leased: int = 0, succeeded: int = 0, dead: int = 0) -> BatchCounts:
    return BatchCounts(queued, leased, succeeded, dead, failed_attempts=dead, average_time=None)


def leases(*seqs: int, token: int = 3) -> list[Lease]:
    return [Lease("job", seq, token, 1, b"{}") for seq in seqs]


# -- how many workers a job wants ----------------------------------------------------------


@pytest.mark.parametrize(
    ("live", "batches", "hook_running", "has_on_complete", "wanted"),
    [
        # Queued batches: up to what the job asked for, and no more than there is work.
        (1, counts(queued=10), False, None, 4),
        (1, counts(queued=2), False, None, 3),
        (0, counts(queued=1, leased=5), False, None, 1),
        # Only leased ones left: the live workers, no new ones.
        (2, counts(leased=3), False, None, 2),
        (0, counts(leased=1), False, None, 0),
        # All terminal: the workers still there, or the one running on_job_complete.
        (2, counts(succeeded=9), False, None, 2),
        (0, counts(succeeded=9), True, True, 0),
        # All terminal and nobody left: one worker to run on_job_complete, unless the
        # handler is known to have none (None: the job ends now).
        (0, counts(succeeded=9), False, True, 1),
        (0, counts(succeeded=9), False, None, 1),
        (0, counts(succeeded=9, dead=1), False, False, None),
    ],
)
def test_wanted_workers(
    live: int, batches: BatchCounts, hook_running: bool, has_on_complete: bool | None, wanted: int
) -> None:
    assert (
        policy.wanted_workers(
            workers=4,
            live=live,
            counts=batches,
            hook_running=hook_running,
            has_on_complete=has_on_complete,
        )
        == wanted
    )


def test_a_paused_job_wants_no_worker_more_and_still_ends() -> None:
    def wanted(live: int, batches: BatchCounts) -> int | None:
        return policy.wanted_workers(
            workers=4,
            live=live,
            counts=batches,
            hook_running=False,
            has_on_complete=False,
            paused=True,
        )

    assert wanted(0, counts(queued=5)) == 0
    assert wanted(2, counts(queued=5, leased=1)) == 2
    # Its last batches done while paused: nothing holds it open.
    assert wanted(0, counts(succeeded=5)) is None


def test_an_idle_worker_of_a_paused_job_waits_for_the_resume() -> None:
    def idle(batches: BatchCounts) -> Idle:
        return policy.idle_after_counts(
            stopping=False, counts=batches, hook_free=True, has_on_complete=True, paused=True
        )

    assert idle(counts(queued=3)) is Idle.WAIT
    assert idle(counts(leased=1)) is Idle.WAIT
    assert idle(counts(succeeded=3)) is Idle.RUN_HOOK


# -- grants --------------------------------------------------------------------------------


def grant_size(
    lease_size: int = 100,
    total_batches: int = 10_000,
    workers: int = 2,
    batch_timeout: float | None = None,
    recycle: int | None = None,
    batches_done: int = 0,
    held: int = 0,
) -> int:
    return policy.grant_size(
        lease_size=lease_size,
        total_batches=total_batches,
        workers=workers,
        batch_timeout=batch_timeout,
        recycle=recycle,
        batches_done=batches_done,
        held=held,
    )


def test_grant_is_the_lease_size_while_the_job_is_large() -> None:
    # A share is 10_000 // (2 workers * 4) = 1250 batches: the lease size is smaller.
    assert constants.LEASE_SHARE_DIVISOR == 4
    assert grant_size(lease_size=100) == 100
    assert grant_size(lease_size=2000) == 1250


def test_grant_is_a_share_of_a_small_job() -> None:
    # 400 // (2 * 4) = 50: the tail of the job is spread over both workers.
    assert grant_size(lease_size=100, total_batches=400) == 50
    assert grant_size(lease_size=100, total_batches=400, workers=4) == 25
    # No workers counted yet: as for one.
    assert grant_size(lease_size=100, total_batches=80, workers=0) == 20
    # Never less than one batch.
    assert grant_size(lease_size=100, total_batches=3, workers=1) == 1


def test_grant_with_a_batch_timeout_is_one_batch() -> None:
    assert grant_size(lease_size=100, batch_timeout=30.0) == 1


def test_grant_stops_at_the_recycle_point() -> None:
    # max_batches_per_worker 10: 6 done and 2 held leave 2.
    assert grant_size(lease_size=100, recycle=10, batches_done=6, held=2) == 2
    assert grant_size(lease_size=1, recycle=10, batches_done=6, held=2) == 1
    # At (or past) the point, a grant is still one batch: may_lease decides whether.
    assert grant_size(lease_size=100, recycle=10, batches_done=9, held=1) == 1
    assert grant_size(lease_size=100, recycle=1000, batches_done=6, held=2) == 100


def test_may_lease() -> None:
    assert policy.may_lease(stopping=False, recycle=None, batches_done=10**6, held=50)
    assert not policy.may_lease(stopping=True, recycle=None, batches_done=0, held=0)
    assert policy.may_lease(stopping=False, recycle=10, batches_done=6, held=3)
    assert not policy.may_lease(stopping=False, recycle=10, batches_done=6, held=4)
    assert not policy.may_lease(stopping=False, recycle=10, batches_done=10, held=0)


@pytest.mark.parametrize(
    ("seconds", "batches", "size"),
    [
        # LEASE_TARGET_SECONDS (0.05 s) of work per grant.
        (0.5, 1000, 100),
        (0.01, 10, 50),
        (0.05, 3, 3),
        # Slower than the target: one at a time.
        (1.0, 2, 1),
        # Too fast to time: the cap.
        (0.0, 5, constants.MAX_LEASE_BATCHES),
        (0.000_001, 1000, constants.MAX_LEASE_BATCHES),
    ],
)
def test_lease_size_for(seconds: float, batches: int, size: int) -> None:
    assert constants.LEASE_TARGET_SECONDS == 0.05
    assert constants.MAX_LEASE_BATCHES == 8192
    assert policy.lease_size_for(seconds, batches) == size


# -- idle workers --------------------------------------------------------------------------


def test_idle_before_counts() -> None:
    assert policy.idle_before_counts(stopping=True, recycle=None, batches_done=0) is Idle.EXIT
    # Stopping wins over recycling: no fresh worker is wanted.
    assert policy.idle_before_counts(stopping=True, recycle=5, batches_done=5) is Idle.EXIT
    assert policy.idle_before_counts(stopping=False, recycle=5, batches_done=5) is Idle.RECYCLE
    assert policy.idle_before_counts(stopping=False, recycle=5, batches_done=7) is Idle.RECYCLE
    # Otherwise the counts decide.
    assert policy.idle_before_counts(stopping=False, recycle=5, batches_done=4) is None
    assert policy.idle_before_counts(stopping=False, recycle=None, batches_done=10**6) is None


@pytest.mark.parametrize(
    ("stopping", "batches", "hook_free", "has_on_complete", "action"),
    [
        (True, counts(queued=5), True, True, Idle.EXIT),
        # Batches were re-queued since the lease came back empty: try again.
        (False, counts(queued=1, leased=2), True, True, Idle.RETRY),
        # Others hold batches that may fail and come back: wait for them.
        (False, counts(leased=2, succeeded=3), True, True, Idle.WAIT),
        (False, counts(leased=1, succeeded=3), False, False, Idle.WAIT),
        # All terminal: this worker runs on_job_complete, or the job ends now.
        (False, counts(succeeded=5), True, True, Idle.RUN_HOOK),
        (False, counts(succeeded=4, dead=1), True, False, Idle.CONCLUDE),
        # Someone else runs (or ran) on_job_complete: nothing left for this one.
        (False, counts(succeeded=5), False, True, Idle.EXIT),
        (False, counts(succeeded=5), False, False, Idle.EXIT),
    ],
)
def test_idle_after_counts(
    stopping: bool, batches: BatchCounts, hook_free: bool, has_on_complete: bool, action: Idle
) -> None:
    assert (
        policy.idle_after_counts(
            stopping=stopping, counts=batches, hook_free=hook_free, has_on_complete=has_on_complete
        )
        is action
    )


# -- deaths --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current_seq", "unreported", "current", "unstarted"),
    [
        # In the middle of its grant: the ones before ran (unreported), the rest go back.
        (7, [5, 6], 7, [8]),
        (5, [], 5, [6, 7, 8]),
        (8, [5, 6, 7], 8, []),
    ],
)
def test_death_charges_the_batch_it_was_in_and_the_ones_before(
    current_seq: int, unreported: list[int], current: int, unstarted: list[int]
) -> None:
    held = leases(5, 6, 7, 8)
    by_seq = {lease.seq: lease for lease in held}
    assert policy.death_charges(held, current_seq) == Charges(
        [by_seq[seq] for seq in unreported], by_seq[current], [by_seq[seq] for seq in unstarted]
    )


@pytest.mark.parametrize("current_seq", [None, 2])
def test_death_before_its_only_batch_began_charges_nothing(current_seq: int | None) -> None:
    # 2: the progress word still names a batch of an earlier grant.
    held = leases(5)
    assert policy.death_charges(held, current_seq) == Charges([], None, held)


@pytest.mark.parametrize("current_seq", [None, 2])
def test_death_before_any_batch_of_a_larger_grant_began_charges_nothing(
    current_seq: int | None,
) -> None:
    held = leases(5, 6, 7)
    assert policy.death_charges(held, current_seq) == Charges([], None, held)


def test_death_charges_nothing_when_it_held_nothing() -> None:
    assert policy.death_charges([], 7) == Charges([], None, [])


def test_what_counts_toward_the_crash_loop() -> None:
    # A crash counts, whether or not it was in a batch.
    assert policy.counts_toward_crash_loop(None, charged=True)
    assert policy.counts_toward_crash_loop(None, charged=False)
    # A batch killed for its own fault (time limit, a bad report) and charged does not.
    assert not policy.counts_toward_crash_loop("batch exceeded its time limit", charged=True)
    # A kill outside a batch does.
    assert policy.counts_toward_crash_loop("the worker sent a bad frame", charged=False)


def test_restart_delay_doubles_up_to_its_cap() -> None:
    delays = [policy.restart_delay(deaths, 0.5, 10.0) for deaths in range(1, 8)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


# -- how a job ends ------------------------------------------------------------------------


def test_final_status() -> None:
    assert policy.final_status(counts(succeeded=10)) is JobStatus.SUCCEEDED
    assert policy.final_status(counts()) is JobStatus.SUCCEEDED
    assert policy.final_status(counts(succeeded=9, dead=1)) is JobStatus.COMPLETED_WITH_FAILURES


# -- capacity ------------------------------------------------------------------------------


def test_capacity_hands_out_slots_and_gpus() -> None:
    capacity = Capacity(3, [2, 0, 1], MemoryLimiter(base=Path("/nonexistent")))
    assert (capacity.gpus, capacity.free_slots, capacity.next_slot()) == ([0, 1, 2], 3, 0)
    assert capacity.take(0, 2) == [0, 1]
    assert (capacity.free_slots, capacity.next_slot()) == (2, 1)
    # Too few GPUs free: nothing is taken, not even the slot.
    assert capacity.take(1, 2) is None
    assert (capacity.free_slots, capacity.next_slot()) == (2, 1)
    assert capacity.take(1, 0) == []
    assert capacity.take(2, 1) == [2]
    assert capacity.free_slots == 0
    # A freed slot is the next one handed out; freed GPUs go back in order.
    capacity.release(0, [0, 1])
    assert (capacity.free_slots, capacity.next_slot()) == (1, 0)
    assert capacity.take(0, 3) is None
    capacity.release(2, [2])
    assert capacity.take(0, 3) == [0, 1, 2]
