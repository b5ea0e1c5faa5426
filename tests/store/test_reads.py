"""ReadStore: jobs, their counts, listing pages, results and dead letters, metric counts."""

from __future__ import annotations

import math

from batchd.store.records import BatchState, Failure, JobStatus, Success
from batchd.store.roles import Store
from tests.store.support import new_job, payloads, running_job


async def test_get_job_of_an_unknown_id_is_none(store: Store) -> None:
    assert await store.get_job("0000000000000ffff") is None


async def test_active_jobs_are_the_unfinished_ones_in_admission_order(store: Store) -> None:
    pending = (await store.create_job(new_job(), payloads(1))).job_id
    running = await running_job(store, 1)
    ended = await running_job(store, 1)
    assert await store.set_status(ended, JobStatus.STOPPED)
    assert [job.job_id for job in await store.active_jobs()] == [pending, running]


async def test_list_jobs_newest_first(store: Store) -> None:
    ids = [(await store.create_job(new_job(), payloads(1))).job_id for _ in range(3)]
    listed = [listed.job.job_id for listed in await store.list_jobs_page(["demo"], 10)]
    assert listed == list(reversed(ids))
    assert sorted(ids, reverse=True) == listed


async def test_list_pages_follow_one_another_and_filter_by_api(store: Store) -> None:
    ids = [(await store.create_job(new_job(api="a"), payloads(1))).job_id for _ in range(5)]
    other = (await store.create_job(new_job(api="b"), payloads(1))).job_id
    page = await store.list_jobs_page(["a"], 2)
    assert [listed.job.job_id for listed in page] == [ids[4], ids[3]]
    page = await store.list_jobs_page(["a"], 2, before=ids[3])
    assert [listed.job.job_id for listed in page] == [ids[2], ids[1]]
    page = await store.list_jobs_page(["a"], 2, before=ids[1])
    assert [listed.job.job_id for listed in page] == [ids[0]]
    both = await store.list_jobs_page(["b", "a"], 3)
    assert [listed.job.job_id for listed in both] == [other, ids[4], ids[3]]
    assert await store.list_jobs_page([], 10) == []
    assert await store.list_jobs_page(["nope"], 10) == []


async def test_list_pages_of_active_jobs(store: Store) -> None:
    pending = (await store.create_job(new_job(), payloads(1))).job_id
    running = await running_job(store, 1)
    ended = await running_job(store, 1)
    assert await store.set_status(ended, JobStatus.SUCCEEDED)
    page = await store.list_jobs_page(["demo"], 10, active_only=True)
    assert [listed.job.job_id for listed in page] == [running, pending]
    page = await store.list_jobs_page(["demo"], 10, before=running, active_only=True)
    assert [listed.job.job_id for listed in page] == [pending]


async def test_a_listing_carries_each_jobs_counts(store: Store) -> None:
    job_id = await running_job(store, 4, max_receive_count=1)
    one, two, _ = await store.lease(job_id, 3, 60)
    assert await store.succeed(job_id, [Success(1, one.token, 2.0, None)]) == 1
    assert await store.fail(job_id, Failure(2, two.token, "x", None), 1) is BatchState.DEAD
    fresh = (await store.create_job(new_job(), payloads(2))).job_id
    listed = await store.list_jobs_page(["demo"], 10)
    assert [entry.job for entry in listed] == [
        await store.get_job(fresh),
        await store.get_job(job_id),
    ]
    assert [entry.counts for entry in listed] == [
        await store.counts(fresh),
        await store.counts(job_id),
    ]
    counts = listed[1].counts
    assert (counts.queued, counts.leased, counts.succeeded, counts.dead) == (1, 1, 1, 1)
    assert (counts.failed_attempts, counts.average_time, counts.unfinished) == (1, 2.0, 2)
    assert listed[0].counts.average_time is None


async def test_metric_counts_by_status_and_unfinished_queues_by_api(store: Store) -> None:
    a = await running_job(store, 3, api="a")
    await store.lease(a, 1, 60)
    await store.create_job(new_job(api="b"), payloads(2))
    done = await running_job(store, 4, api="b")
    assert await store.set_status(done, JobStatus.COMPLETED_WITH_FAILURES)
    counts = await store.metric_counts()
    assert counts.jobs_by_status == {"running": 1, "pending": 1, "completed_with_failures": 1}
    assert counts.queued_by_api == {"a": 2, "b": 2}
    assert counts.leased_by_api == {"a": 1, "b": 0}
    assert await store.queue_depth() == (4, 1)


async def test_results_and_dead_letters_page_through_every_row(store: Store) -> None:
    job_id = await running_job(store, 2500, max_receive_count=1)
    leases = await store.lease(job_id, 2500, 60)
    ok = [Success(lease.seq, lease.token, 0.0, b"%d" % lease.seq) for lease in leases[:1200]]
    assert await store.succeed(job_id, ok) == 1200
    for lease in leases[1200:]:
        await store.fail(job_id, Failure(lease.seq, lease.token, "no", None), 1)
    results = [(r.seq, r.result) async for r in store.results(job_id)]
    assert results == [(seq, b"%d" % seq) for seq in range(1, 1201)]
    dead = [d.seq async for d in store.dead_letters(job_id)]
    assert dead == list(range(1201, 2501))


async def test_results_and_dead_letters_keep_to_their_job(store: Store) -> None:
    one = await running_job(store, 1, max_receive_count=1)
    two = await running_job(store, 1, max_receive_count=1)
    (a,) = await store.lease(one, 1, 60)
    await store.lease(two, 1, 60)
    assert await store.succeed(one, [Success(1, a.token, 0.1, b'"r"')]) == 1
    assert await store.expire_leases(math.inf) == [(two, 1, BatchState.DEAD)]
    assert [(r.seq, r.result) async for r in store.results(one)] == [(1, b'"r"')]
    assert [r async for r in store.results(two)] == []
    assert [d async for d in store.dead_letters(one)] == []
    assert [(d.seq, d.payload) async for d in store.dead_letters(two)] == [(1, b"[0]")]
