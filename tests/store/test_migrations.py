"""A store opened on a fresh location is empty; what it stored survives a reopen. (The
SQLite schema upgrades are in sqlite/test_sqlite_migrations.py.)"""

from __future__ import annotations

from batchd.store.records import JobStatus
from tests.store.conftest import Opener
from tests.store.support import new_job, payloads, running_job


async def test_a_fresh_store_is_empty(reopen: Opener) -> None:
    store = await reopen()
    try:
        assert await store.list_apis() == []
        assert await store.active_jobs() == []
        assert await store.prunable_jobs(float("inf")) == []
        metrics = await store.metric_counts()
        assert (metrics.jobs_by_status, metrics.queued_by_api) == ({}, {})
    finally:
        await store.close()


async def test_jobs_survive_reopen(reopen: Opener) -> None:
    first = await reopen()
    job_id = await running_job(first, 3)
    await first.lease(job_id, 1, 60)
    await first.add_api_version("demo", {"v": 1}, {})
    await first.close()
    second = await reopen()
    try:
        assert [job.job_id for job in await second.active_jobs()] == [job_id]
        counts = await second.counts(job_id)
        assert (counts.queued, counts.leased) == (2, 1)
        api = await second.get_api("demo")
        assert api is not None and api.spec == {"v": 1}
        # Its leases still work, and so does admission after the reopen.
        assert [lease.seq for lease in await second.lease(job_id, 5, 60)] == [2, 3]
        other = await second.create_job(new_job(), payloads(1))
        assert other.status is JobStatus.PENDING
    finally:
        await second.close()
