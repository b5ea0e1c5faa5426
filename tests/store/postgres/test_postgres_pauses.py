"""An API's pause on a shared database: it waits for the admissions to that API under way
on any node (so none of their jobs escapes it), and its wait holds up nothing else of the
node that pauses: not its leases, not its other admissions."""

from __future__ import annotations

import asyncio

import asyncpg

from batchd.store.postgres.store import PostgresStore
from batchd.store.records import PAUSED_BY_API, JobStatus
from tests.store.support import new_job, payloads, running_job


async def test_an_api_pause_waits_for_an_admission_without_holding_the_writer(dsn: str) -> None:
    store = PostgresStore(dsn)
    await store.open()
    other = await asyncpg.connect(dsn)
    try:
        busy = await running_job(store, 3, api="busy")
        # Another node admitting a job to `held`: its transaction holds the shared lock
        # that admission takes, and its job is not committed yet.
        admission = other.transaction()
        await admission.start()
        await other.execute("SELECT pg_advisory_xact_lock_shared(hashtext('batchd pause held'))")
        pausing = asyncio.create_task(store.pause_api("held", True))
        # Meanwhile this node leases, and admits to other APIs, as usual (a writer held up
        # by the pause would not answer at all).
        leased = await asyncio.wait_for(store.lease(busy, 3, 60), 10)
        assert [lease.seq for lease in leased] == [1, 2, 3]
        admitted = await asyncio.wait_for(store.create_job(new_job(api="busy"), payloads(1)), 10)
        assert admitted.paused == 0
        assert not pausing.done()
        await admission.commit()
        assert await asyncio.wait_for(pausing, 30) == []
        held = await store.create_job(new_job(api="held"), payloads(1))
        assert held.paused == PAUSED_BY_API
        assert await store.set_status(held.job_id, JobStatus.RUNNING)
        assert await store.lease(held.job_id, 1, 60) == []
    finally:
        await other.close()
        await store.close()
