"""JobStore: admission and status changes."""

from __future__ import annotations

import pytest

from batchd.store.chunks import BatchChunks, Chunk
from batchd.store.records import JobStatus, Success
from batchd.store.roles import Store
from tests.store.support import new_job, payloads, running_job


async def test_create_job_stores_every_batch(store: Store) -> None:
    job = await store.create_job(new_job(), payloads(5))
    assert job.total_batch_count == 5
    assert job.status is JobStatus.PENDING
    counts = await store.counts(job.job_id)
    assert (counts.queued, counts.leased, counts.succeeded, counts.dead) == (5, 0, 0, 0)


async def test_create_job_returns_the_record_as_stored(store: Store) -> None:
    sent = new_job(
        max_receive_count=3,
        api="other",
        priority=7,
        timeout=30.0,
        batch_timeout=2.5,
        retry_of="0123456789abc0000",
        config={"k": [1, "two"]},
    )
    job = await store.create_job(sent, payloads(2))
    assert job == await store.get_job(sent.job_id)
    assert (job.job_id, job.api_name, job.api_version, job.kind) == (
        sent.job_id,
        "other",
        1,
        "item_list",
    )
    assert (job.priority, job.timeout, job.batch_timeout, job.max_receive_count) == (
        7,
        30.0,
        2.5,
        3,
    )
    assert (job.config, job.retry_of, job.workers) == ({"k": [1, "two"]}, "0123456789abc0000", 1)
    assert (job.end_time, job.error, job.has_on_complete, job.pruned_at) == (None, None, None, None)
    assert job.created_at == sent.created_at


async def test_create_job_takes_chunks_and_refuses_a_wrong_count(store: Store) -> None:
    chunks = BatchChunks(3, [Chunk(2, b"[[0],[1]]"), Chunk(1, b'[{"x":2}]')])
    job = await store.create_job(new_job(), chunks)
    assert job.total_batch_count == 3
    assert await store.set_status(job.job_id, JobStatus.RUNNING)
    grant = await store.lease(job.job_id, 10, 60)
    assert [(lease.seq, lease.payload) for lease in grant] == [
        (1, b"[0]"),
        (2, b"[1]"),
        (3, b'{"x":2}'),
    ]
    wrong = new_job()
    with pytest.raises(ValueError, match="hold 3 batches, not 4"):
        await store.create_job(wrong, BatchChunks(4, chunks.chunks))
    # All or nothing: the refused job left no row.
    assert await store.get_job(wrong.job_id) is None


async def test_status_moves_until_terminal_and_keeps_the_first_error(store: Store) -> None:
    job = await store.create_job(new_job(), payloads(1))
    assert await store.set_status(job.job_id, JobStatus.RUNNING, "a note")
    running = await store.get_job(job.job_id)
    assert running is not None
    assert (running.status, running.end_time, running.error) == (JobStatus.RUNNING, None, "a note")
    # No error given: the one recorded stays.
    assert await store.set_status(job.job_id, JobStatus.WORKER_ERROR)
    ended = await store.get_job(job.job_id)
    assert ended is not None and ended.status is JobStatus.WORKER_ERROR
    assert ended.error == "a note" and ended.end_time is not None
    assert not await store.set_status(job.job_id, JobStatus.STOPPED, "too late")
    again = await store.get_job(job.job_id)
    assert again == ended


async def test_terminal_status_is_final_and_voids_leases(store: Store) -> None:
    job_id = await running_job(store, 2)
    (lease,) = await store.lease(job_id, 1, 60)
    assert await store.set_status(job_id, JobStatus.STOPPED)
    assert not await store.set_status(job_id, JobStatus.RUNNING)
    assert not await store.set_status(job_id, JobStatus.SUCCEEDED)
    job = await store.get_job(job_id)
    assert job is not None and job.status is JobStatus.STOPPED and job.end_time is not None
    assert await store.lease(job_id, 1, 60) == []
    assert await store.succeed(job_id, [Success(1, lease.token, 0.1, None)]) == 0
    assert (await store.counts(job_id)).leased == 0


async def test_a_void_lease_goes_back_unburnt(store: Store) -> None:
    job_id = await running_job(store, 1)
    await store.lease(job_id, 1, 60)
    assert await store.set_status(job_id, JobStatus.TIMED_OUT, "timed out")
    counts = await store.counts(job_id)
    assert (counts.queued, counts.leased, counts.failed_attempts) == (1, 0, 0)


async def test_set_has_on_complete(store: Store) -> None:
    job = await store.create_job(new_job(), payloads(1))
    await store.set_has_on_complete(job.job_id, True)
    stored = await store.get_job(job.job_id)
    assert stored is not None and stored.has_on_complete is True
    await store.set_has_on_complete(job.job_id, False)
    stored = await store.get_job(job.job_id)
    assert stored is not None and stored.has_on_complete is False
