"""PauseStore: a paused job leases nothing, its leases in hand go on, and resuming it
(or its API) lets leasing go on where it stopped."""

from __future__ import annotations

import time

from batchd.store.records import PAUSED_BY_API, PAUSED_BY_JOB, JobStatus, Success
from batchd.store.roles import Store
from tests.store.support import lease_all, new_job, payloads, running_job


async def test_a_paused_job_leases_nothing_and_its_leases_finish(store: Store) -> None:
    job_id = await running_job(store, 5)
    held = await store.lease(job_id, 2, 60)
    assert await store.pause_job(job_id, True)
    assert await store.lease(job_id, 10, 60) == []
    # What was leased before the pause still reports, under its token.
    outcomes = [Success(lease.seq, lease.token, 0.01, None) for lease in held]
    assert await store.succeed(job_id, outcomes) == 2
    job = await store.get_job(job_id)
    assert job is not None
    assert (job.status, job.paused, job.shown_status) == (
        JobStatus.RUNNING,
        PAUSED_BY_JOB,
        JobStatus.PAUSED,
    )
    assert await store.pause_job(job_id, False)
    assert [seq for seq, _ in await lease_all(store, job_id)] == [3, 4, 5]
    counts = await store.counts(job_id)
    assert (counts.queued, counts.leased, counts.succeeded) == (0, 3, 2)


async def test_a_requeued_batch_of_a_paused_job_waits_too(store: Store) -> None:
    job_id = await running_job(store, 2)
    grant = await store.lease(job_id, 2, 60)
    await store.pause_job(job_id, True)
    assert await store.release(job_id, [(grant[0].seq, grant[0].token)]) == 1
    assert await store.lease(job_id, 10, 60) == []
    await store.pause_job(job_id, False)
    assert [lease.seq for lease in await store.lease(job_id, 10, 60)] == [1]


async def test_the_time_paused_moves_the_deadline(store: Store) -> None:
    created = time.time() - 100
    job = await store.create_job(new_job(timeout=150, created_at=created), payloads(1))
    assert job.deadline() == created + 150
    before = time.time()
    await store.pause_job(job.job_id, True)
    paused = await store.get_job(job.job_id)
    assert paused is not None and paused.paused_at is not None
    assert before <= paused.paused_at <= time.time()
    # While paused the deadline moves on with the clock.
    assert (paused.deadline() or 0) >= created + 150 + (time.time() - paused.paused_at) - 0.01
    await store.pause_job(job.job_id, False)
    resumed = await store.get_job(job.job_id)
    assert resumed is not None and resumed.paused_at is None and resumed.paused == 0
    assert 0 < resumed.paused_seconds <= time.time() - before
    assert resumed.deadline() == created + 150 + resumed.paused_seconds


async def test_a_finished_or_unknown_job_is_not_paused(store: Store) -> None:
    job_id = await running_job(store, 1)
    assert await store.set_status(job_id, JobStatus.STOPPED)
    assert not await store.pause_job(job_id, True)
    assert not await store.pause_job("no-such-job", True)
    job = await store.get_job(job_id)
    assert job is not None and (job.paused, job.shown_status) == (0, JobStatus.STOPPED)


async def test_pausing_an_api_pauses_its_jobs_and_the_ones_admitted_under_it(
    store: Store,
) -> None:
    running = await running_job(store, 3, api="paused-api")
    other = await running_job(store, 1, api="other-api")
    assert await store.pause_api("paused-api", True) == [running]
    assert await store.paused_apis() == ["paused-api"]
    admitted = await store.create_job(new_job(api="paused-api"), payloads(2))
    assert admitted.paused == PAUSED_BY_API and admitted.shown_status is JobStatus.PAUSED
    await store.set_status(admitted.job_id, JobStatus.RUNNING)
    assert await store.lease(running, 10, 60) == []
    assert await store.lease(admitted.job_id, 10, 60) == []
    assert len(await store.lease(other, 10, 60)) == 1

    # The job's own pause outlives its API's.
    assert await store.pause_job(running, True)
    assert sorted(await store.pause_api("paused-api", False)) == sorted([running, admitted.job_id])
    assert await store.paused_apis() == []
    assert await store.lease(running, 10, 60) == []
    assert [seq for seq, _ in await lease_all(store, admitted.job_id)] == [1, 2]
    assert await store.pause_job(running, False)
    assert [seq for seq, _ in await lease_all(store, running)] == [1, 2, 3]
    later = await store.create_job(new_job(api="paused-api"), payloads(1))
    assert later.paused == 0 and later.shown_status is JobStatus.PENDING


async def test_resuming_a_job_of_a_paused_api_leaves_it_paused_by_the_api(store: Store) -> None:
    job_id = await running_job(store, 2, api="held-api")
    assert await store.pause_job(job_id, True)
    assert await store.pause_api("held-api", True) == [job_id]
    # The job's own resume lifts its own flag only: its API's pause holds, and the time
    # paused keeps running from the first pause.
    first = await store.get_job(job_id)
    assert first is not None and first.paused == PAUSED_BY_JOB | PAUSED_BY_API
    assert await store.pause_job(job_id, False)
    held = await store.get_job(job_id)
    assert held is not None
    assert (held.paused, held.shown_status) == (PAUSED_BY_API, JobStatus.PAUSED)
    assert (held.paused_at, held.paused_seconds) == (first.paused_at, 0)
    assert await store.lease(job_id, 10, 60) == []
    before_resume = time.time()
    assert await store.pause_api("held-api", False) == [job_id]
    resumed = await store.get_job(job_id)
    assert resumed is not None and (resumed.paused, resumed.paused_at) == (0, None)
    assert first.paused_at is not None
    paused_for = resumed.paused_seconds
    assert before_resume - first.paused_at <= paused_for <= time.time() - first.paused_at
    assert [seq for seq, _ in await lease_all(store, job_id)] == [1, 2]


async def test_paused_jobs_are_counted_as_paused(store: Store) -> None:
    job_id = await running_job(store, 1)
    await running_job(store, 1)
    await store.pause_job(job_id, True)
    by_status = (await store.metric_counts()).jobs_by_status
    assert (by_status.get("paused"), by_status.get("running")) == (1, 1)


async def test_a_deleted_api_takes_its_pause_with_it(store: Store) -> None:
    await store.add_api_version("short-lived", {"digest": "d"}, {})
    await store.pause_api("short-lived", True)
    assert await store.delete_api("short-lived")
    assert await store.paused_apis() == []
    job = await store.create_job(new_job(api="short-lived"), payloads(1))
    assert job.paused == 0


async def test_a_listing_by_status_sees_a_paused_job_as_paused(store: Store) -> None:
    paused = await running_job(store, 1)
    running = await running_job(store, 1)
    await store.pause_job(paused, True)

    async def listed(*statuses: str) -> list[str]:
        page = await store.list_jobs_page(["demo"], 10, statuses=list(statuses))
        return [entry.job.job_id for entry in page]

    assert await listed("paused") == [paused]
    assert await listed("running") == [running]
    assert await listed("running", "paused") == [running, paused]
