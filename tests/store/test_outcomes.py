"""OutcomeStore: successes and failed attempts; a stale lease token changes nothing."""

from __future__ import annotations

import asyncio
import math

import pytest

from batchd.store.records import BatchState, Failure, JobStatus, Success
from batchd.store.roles import Store
from tests.store.support import running_job


async def test_lease_in_order_and_succeed(store: Store) -> None:
    job_id = await running_job(store, 3)
    leases = await store.lease(job_id, 2, 60)
    assert [(lease.seq, lease.attempt, lease.payload) for lease in leases] == [
        (1, 1, b"[0]"),
        (2, 1, b"[1]"),
    ]
    ok = [Success(lease.seq, lease.token, 0.5, b'{"r":1}') for lease in leases]
    assert await store.succeed(job_id, ok) == 2
    counts = await store.counts(job_id)
    assert (counts.queued, counts.succeeded, counts.average_time) == (1, 2, 0.5)
    results = [(r.seq, r.result) async for r in store.results(job_id)]
    assert results == [(1, b'{"r":1}'), (2, b'{"r":1}')]


async def test_successes_with_and_without_results_out_of_order(store: Store) -> None:
    job_id = await running_job(store, 6)
    first = await store.lease(job_id, 3, 60)
    second = await store.lease(job_id, 3, 60)
    grant = {lease.seq: lease.token for lease in first + second}
    # Two grants, interleaved and out of order; some with results, some without.
    report = [
        Success(5, grant[5], 4.0, None),
        Success(1, grant[1], 1.0, None),
        Success(3, grant[3], 3.0, b"3"),
        Success(2, grant[2], 2.0, None),
        Success(6, grant[6], 5.0, b"6"),
        Success(4, grant[4], 3.0, None),
    ]
    assert await store.succeed(job_id, report) == 6
    counts = await store.counts(job_id)
    assert (counts.leased, counts.succeeded) == (0, 6)
    assert counts.average_time == pytest.approx(18.0 / 6)
    assert [(r.seq, r.result) async for r in store.results(job_id)] == [(3, b"3"), (6, b"6")]


async def test_only_current_successes_count_toward_the_time(store: Store) -> None:
    job_id = await running_job(store, 2)
    one, two = await store.lease(job_id, 2, 60)
    report = [Success(1, one.token, 1.0, b"a"), Success(2, two.token + 1, 100.0, b"b")]
    assert await store.succeed(job_id, report) == 1
    counts = await store.counts(job_id)
    assert (counts.succeeded, counts.leased, counts.average_time) == (1, 1, 1.0)
    assert await store.succeed(job_id, []) == 0


async def test_stale_token_changes_nothing(store: Store) -> None:
    job_id = await running_job(store, 1, max_receive_count=3)
    (first,) = await store.lease(job_id, 1, 60)
    assert await store.expire_leases(math.inf) == [(job_id, 1, BatchState.QUEUED)]
    (second,) = await store.lease(job_id, 1, 60)
    assert second.attempt == 2 and second.token != first.token
    # The superseded attempt reports late: refused, both as success and as failure.
    assert await store.succeed(job_id, [Success(1, first.token, 1.0, None)]) == 0
    assert await store.fail(job_id, Failure(1, first.token, "late", None), 3) is None
    counts = await store.counts(job_id)
    assert (counts.leased, counts.succeeded, counts.failed_attempts) == (1, 0, 1)
    assert await store.succeed(job_id, [Success(1, second.token, 1.0, None)]) == 1
    assert (await store.counts(job_id)).succeeded == 1


async def test_failures_requeue_then_dead_letter(store: Store) -> None:
    job_id = await running_job(store, 1, max_receive_count=2)
    (lease,) = await store.lease(job_id, 1, 60)
    assert (
        await store.fail(job_id, Failure(1, lease.token, "boom 1", "tb1"), 2) is BatchState.QUEUED
    )
    (lease,) = await store.lease(job_id, 1, 60)
    assert await store.fail(job_id, Failure(1, lease.token, "boom 2", "tb2"), 2) is BatchState.DEAD
    assert await store.lease(job_id, 1, 60) == []
    dead = [d async for d in store.dead_letters(job_id)]
    assert [(d.seq, d.payload, d.attempts, d.error, d.traceback) for d in dead] == [
        (1, b"[0]", 2, "boom 2", "tb2")
    ]
    counts = await store.counts(job_id)
    assert (counts.dead, counts.failed_attempts) == (1, 2)


async def test_a_failure_twice_under_one_token_counts_once(store: Store) -> None:
    job_id = await running_job(store, 1, max_receive_count=5)
    (lease,) = await store.lease(job_id, 1, 60)
    assert await store.fail(job_id, Failure(1, lease.token, "x", None), 5) is BatchState.QUEUED
    assert await store.fail(job_id, Failure(1, lease.token, "x", None), 5) is None
    counts = await store.counts(job_id)
    assert (counts.queued, counts.failed_attempts) == (1, 1)


async def test_concurrent_successes_share_commits_and_keep_their_counts(store: Store) -> None:
    job_id = await running_job(store, 50)
    leases = await store.lease(job_id, 50, 60)
    calls = [
        store.succeed(job_id, [Success(lease.seq, lease.token, 0.1, b"1")]) for lease in leases
    ]
    stale = store.succeed(job_id, [Success(leases[0].seq, leases[0].token + 1, 0.1, b"1")])
    counts = await asyncio.gather(*calls, stale)
    assert counts == [1] * 50 + [0]
    assert (await store.counts(job_id)).succeeded == 50


async def test_any_text_of_an_error_comes_back_as_sent(store: Store) -> None:
    # A handler's message may hold anything a Python string can: a NUL, say.
    job_id = await running_job(store, 1, max_receive_count=1)
    (lease,) = await store.lease(job_id, 1, 60)
    failure = Failure(1, lease.token, "bad\x00byte é", "Traceback\x00 ✓")
    assert await store.fail(job_id, failure, 1) is BatchState.DEAD
    (dead,) = [d async for d in store.dead_letters(job_id)]
    assert (dead.error, dead.traceback) == ("bad\x00byte é", "Traceback\x00 ✓")
    assert await store.set_status(job_id, JobStatus.COMPLETED_WITH_FAILURES, "ended\x00 here")
    job = await store.get_job(job_id)
    assert job is not None and job.error == "ended\x00 here"
