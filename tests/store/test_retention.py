"""RetentionStore: pruning finished jobs and keeping the files bounded."""

from __future__ import annotations

import time

from batchd.store.records import Failure, JobStatus, Success
from batchd.store.roles import Store
from tests.store.support import new_job, payloads, running_job


async def finished_job(store: Store, batches: int) -> str:
    """A succeeded job whose batches all have rows, a result and a failure among them."""
    job_id = await running_job(store, batches, max_receive_count=2)
    first = await store.lease(job_id, 1, 60)
    assert await store.fail(job_id, Failure(1, first[0].token, "once", None), 2) is not None
    grant = await store.lease(job_id, batches, 60)
    ok = [Success(lease.seq, lease.token, 0.1, b"1") for lease in grant]
    assert await store.succeed(job_id, ok) == batches
    assert await store.set_status(job_id, JobStatus.SUCCEEDED)
    return job_id


async def test_prunable_jobs_are_finished_unpruned_and_ended_before(store: Store) -> None:
    older = await finished_job(store, 2)
    newer = await finished_job(store, 2)
    await running_job(store, 1)
    pending = (await store.create_job(new_job(), payloads(1))).job_id
    later = time.time() + 60
    assert [job.job_id for job in await store.prunable_jobs(later)] == [older, newer]
    assert await store.prunable_jobs(0.0) == []
    assert pending not in {job.job_id for job in await store.prunable_jobs(later)}


async def test_prune_job_deletes_the_batches_and_keeps_the_row(store: Store) -> None:
    job_id = await finished_job(store, 3)
    kept = await finished_job(store, 2)
    before = await store.get_job(job_id)
    # Three batch rows, one failure row and the job's one chunk.
    assert await store.prune_job(job_id) == 5
    job = await store.get_job(job_id)
    assert job is not None and job.pruned_at is not None
    assert job == _without_pruned(before, job.pruned_at)
    assert [r async for r in store.results(job_id)] == []
    assert [job.job_id for job in await store.prunable_jobs(time.time() + 60)] == [kept]
    assert await store.prune_job(job_id) == 0
    assert [r.seq async for r in store.results(kept)] == [1, 2]


async def test_pruning_an_active_job_does_not_mark_it_pruned(store: Store) -> None:
    job_id = await running_job(store, 2)
    await store.prune_job(job_id)
    job = await store.get_job(job_id)
    assert job is not None and job.pruned_at is None


async def test_reclaim_space_gives_back_what_pruning_freed(store: Store) -> None:
    big = [b'["' + b"x" * 100_000 + b'"]'] * 50
    job = await store.create_job(new_job(), big)
    assert await store.set_status(job.job_id, JobStatus.STOPPED)
    assert await store.prune_job(job.job_id) >= 1
    await store.checkpoint()
    assert await store.reclaim_space(10**9) == 0
    await store.checkpoint()
    stored = await store.get_job(job.job_id)
    assert stored is not None and stored.pruned_at is not None


def _without_pruned(job: object, pruned_at: float) -> object:
    import dataclasses

    assert dataclasses.is_dataclass(job) and not isinstance(job, type)
    return dataclasses.replace(job, pruned_at=pruned_at)
