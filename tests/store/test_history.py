"""ReadStore, for the dashboard: a job's outcomes over time, dead letters across jobs, jobs
filtered by status."""

from __future__ import annotations

import time

from batchd.store.records import BatchState, Failure, JobStatus, Success
from batchd.store.roles import Store
from tests.store.support import new_job, payloads, running_job


async def test_a_jobs_history_counts_successes_and_failed_attempts_by_bucket(
    store: Store,
) -> None:
    job_id = await running_job(store, 5, max_receive_count=2)
    leases = await store.lease(job_id, 5, 60)
    before = time.time()
    # Three with a result, one without (the two statements that mark successes).
    outcomes = [Success(lease.seq, lease.token, 0.5, b"1") for lease in leases[:3]]
    assert await store.succeed(job_id, outcomes) == 3
    assert await store.succeed(job_id, [Success(leases[3].seq, leases[3].token, 0.5, None)]) == 1
    failure = Failure(leases[4].seq, leases[4].token, "boom", None)
    assert await store.fail(job_id, failure, 2) is BatchState.QUEUED
    after = time.time()
    history = await store.job_history(job_id, 86_400)
    assert len(history) == 1
    start, succeeded, failed = history[0]
    assert (succeeded, failed) == (4, 1)
    assert start == before // 86_400 * 86_400 and start <= after
    # One-second buckets: every count lands in a bucket within the time it took.
    fine = await store.job_history(job_id, 1)
    assert sum(b[1] for b in fine) == 4 and sum(b[2] for b in fine) == 1
    assert all(before - 1 <= b[0] <= after for b in fine)
    assert [b[0] for b in fine] == sorted({b[0] for b in fine})
    # Whole numbers on both backends (PostgreSQL's floor() is a float): JSON shows 3, not 3.0.
    assert all(type(value) is int for bucket in fine + history for value in bucket)
    other = await running_job(store, 1)
    assert await store.job_history(other, 60) == []


async def test_failed_batches_across_jobs_newest_first_paged_and_filtered(store: Store) -> None:
    jobs = []
    for api, errors in (("a", ["ValueError: x", "KeyError: 'k'"]), ("b", ["ValueError: y"])):
        job_id = await running_job(store, len(errors) + 1, max_receive_count=1, api=api)
        leases = await store.lease(job_id, 10, 60)
        for lease, error in zip(leases, errors, strict=False):
            failure = Failure(lease.seq, lease.token, error, "Traceback ...")
            assert await store.fail(job_id, failure, 1) is BatchState.DEAD
        jobs.append(job_id)
    a, b = jobs
    listed = await store.failed_batches(["a", "b"], 10)
    assert [(f.job_id, f.seq, f.api_name) for f in listed] == [
        (b, 1, "b"),
        (a, 2, "a"),
        (a, 1, "a"),
    ]
    assert listed[0].error == "ValueError: y" and listed[0].traceback == "Traceback ..."
    assert listed[0].attempts == 1 and listed[0].failed_at is not None
    page = await store.failed_batches(["a", "b"], 2)
    rest = await store.failed_batches(["a", "b"], 2, before=page[-1].batch_key)
    assert [f.batch_key for f in page + rest] == [f.batch_key for f in listed]
    assert [f.seq for f in await store.failed_batches(["a"], 10)] == [2, 1]
    narrowed = await store.failed_batches(["a", "b"], 10, contains="ValueError")
    assert [f.error for f in narrowed] == ["ValueError: y", "ValueError: x"]
    # Text, not a pattern: wildcards and quotes match themselves only.
    for text in ("%", "_", "Value%", "\\", "valueerror"):
        assert await store.failed_batches(["a", "b"], 10, contains=text) == [], text
    assert [f.seq for f in await store.failed_batches(["a"], 10, contains="'k'")] == [2]
    assert await store.failed_batches([], 10) == []


async def test_list_jobs_of_given_statuses(store: Store) -> None:
    pending = (await store.create_job(new_job(), payloads(1))).job_id
    running = await running_job(store, 1)
    stopped = await running_job(store, 1)
    assert await store.set_status(stopped, JobStatus.STOPPED)

    async def listed(statuses: list[str], before: str | None = None) -> list[str]:
        page = await store.list_jobs_page(["demo"], 10, before, statuses=statuses)
        return [entry.job.job_id for entry in page]

    assert await listed(["running"]) == [running]
    assert await listed(["stopped", "pending"]) == [stopped, pending]
    assert await listed(["stopped", "pending"], before=stopped) == [pending]
    assert await listed(["succeeded"]) == []
    assert await listed([]) == []
