"""Several daemons on one PostgreSQL queue, as the store sees them: a job's workers
counted over nodes, a silent node swept once however many sweep, its leases expired and
its late outcomes refused (fenced by token), on_job_complete claimed once, a node name in
use refused, a restart of the same node finding its own rows, and notifications."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import asyncpg
import pytest

from batchd.store import NodeNameTaken, named_connections
from batchd.store.postgres.store import PostgresStore
from batchd.store.records import BatchState, HookClaim, JobStatus, Success
from tests.store.support import running_job

Join = Callable[..., Coroutine[Any, Any, PostgresStore]]


@pytest.fixture
async def join(dsn: str) -> AsyncIterator[Join]:
    stores: list[PostgresStore] = []

    async def joined(name: str, instance: str | None = None) -> PostgresStore:
        store = PostgresStore(dsn)
        await store.open()
        stores.append(store)
        await store.join(name, instance or f"box-{name}:/state", (4, 0), 30, "restarted")
        return store

    yield joined
    await asyncio.gather(*(store.close() for store in stores))


async def _silence(dsn: str, store: PostgresStore, seconds: float) -> None:
    """As if the node had not heartbeated for `seconds` (a stopped or cut-off node)."""
    conn = await asyncpg.connect(dsn)
    try:
        sql = "UPDATE nodes SET heartbeat_at = heartbeat_at - $1 WHERE id = $2"
        await conn.execute(sql, seconds, store.node_id)
    finally:
        await conn.close()


async def test_a_jobs_workers_are_counted_over_every_node(join: Join) -> None:
    a, b = await join("a"), await join("b")
    job_id = await running_job(a, 10)
    claims = [await a.claim_worker(job_id, 3), await b.claim_worker(job_id, 3)]
    claims.append(await b.claim_worker(job_id, 3))
    assert claims == [a.node_id, b.node_id, b.node_id]
    # All three of the job's workers are taken, on whichever node.
    assert await a.claim_worker(job_id, 3) is None
    assert await b.claim_worker(job_id, 3) is None
    await b.release_worker(job_id, b.node_id)
    assert await a.claim_worker(job_id, 3) == a.node_id
    assert await b.claim_worker(job_id, 3) is None


async def test_a_silent_node_is_swept_once_and_its_late_outcomes_are_refused(
    join: Join, dsn: str
) -> None:
    a, b, c = await join("a"), await join("b"), await join("c")
    job_id = await running_job(a, 6, max_receive_count=3)
    held_by_b = await b.lease(job_id, 4, 600)
    held_by_a = await a.lease(job_id, 2, 600)
    assert await b.claim_worker(job_id, 5) == b.node_id
    await _silence(dsn, b, 120)
    # Two sweepers at once: each lost node is swept by one of them.
    (swept_a, expired_a), (swept_c, expired_c) = await asyncio.gather(
        a.sweep_lost(30), c.sweep_lost(30)
    )
    assert sorted(swept_a + swept_c) == ["b"]
    expired = sorted(expired_a + expired_c)
    assert expired == [(job_id, lease.seq, BatchState.QUEUED) for lease in held_by_b]
    counts = await a.counts(job_id)
    assert (counts.queued, counts.leased, counts.failed_attempts) == (4, 2, 4)
    # b comes back: fenced. Its outcomes change nothing; a's still count.
    assert await b.heartbeat() is False
    late = [Success(lease.seq, lease.token, 0.1, b'"late"') for lease in held_by_b]
    assert await b.succeed(job_id, late) == 0
    ok = [Success(lease.seq, lease.token, 0.1, b'"a"') for lease in held_by_a]
    assert await a.succeed(job_id, ok) == 2
    # Its worker slot is free again, and a third sweep finds nothing.
    assert await c.claim_worker(job_id, 1) == c.node_id
    assert await a.sweep_lost(30) == ([], [])
    # Re-leased by a live node, under a new token.
    again = await c.lease(job_id, 10, 600)
    assert sorted(lease.seq for lease in again) == sorted(lease.seq for lease in held_by_b)
    assert all(lease.attempt == 2 for lease in again)


async def test_on_job_complete_is_claimed_once_and_lost_with_its_node(join: Join, dsn: str) -> None:
    a, b = await join("a"), await join("b")
    job_id = await running_job(a, 1)
    assert await a.claim_hook(job_id) is HookClaim.CLAIMED
    assert await a.claim_hook(job_id) is HookClaim.CLAIMED
    assert await b.claim_hook(job_id) is HookClaim.ELSEWHERE
    await _silence(dsn, a, 120)
    assert (await b.sweep_lost(30))[0] == ["a"]
    # Not run again by another node: the job ends without it.
    assert await b.claim_hook(job_id) is HookClaim.LOST


async def test_a_node_name_in_use_elsewhere_is_refused(join: Join) -> None:
    await join("gpu1", "machine-1:/var/lib/batchd")
    with pytest.raises(NodeNameTaken, match="gpu1"):
        await join("gpu1", "machine-2:/var/lib/batchd")


async def test_a_restarted_node_expires_what_its_previous_run_held(join: Join) -> None:
    first = await join("gpu1", "machine-1:/var/lib/batchd")
    other = await join("gpu2")
    job_id = await running_job(first, 4, max_receive_count=3)
    mine = await first.lease(job_id, 2, 600)
    theirs = await other.lease(job_id, 2, 600)
    # The same machine and state directory: the previous run is dead (the new one holds
    # the state directory's lock), heartbeat or not.
    again = await join("gpu1", "machine-1:/var/lib/batchd")
    assert await again.counts(job_id) == await other.counts(job_id)
    counts = await again.counts(job_id)
    assert (counts.queued, counts.leased, counts.failed_attempts) == (2, 2, 2)
    assert await first.heartbeat() is False
    assert await other.heartbeat() is True
    ok = [Success(lease.seq, lease.token, 0.1, None) for lease in theirs]
    assert await other.succeed(job_id, ok) == 2
    assert await first.succeed(job_id, [Success(mine[0].seq, mine[0].token, 0.1, None)]) == 0


async def test_every_node_hears_of_a_new_job_and_a_status_change(join: Join) -> None:
    a, b = await join("a"), await join("b")
    heard: asyncio.Queue[str] = asyncio.Queue()
    assert await b.listen_jobs(heard.put_nowait)
    job_id = await running_job(a, 1)
    assert await asyncio.wait_for(heard.get(), 10) == job_id
    assert await asyncio.wait_for(heard.get(), 10) == job_id  # pending -> running
    assert await a.set_status(job_id, JobStatus.STOPPED)
    assert await asyncio.wait_for(heard.get(), 10) == job_id
    # A refused change (the job is over) says nothing.
    assert not await a.set_status(job_id, JobStatus.RUNNING)
    await asyncio.sleep(0)
    assert heard.empty()


async def test_a_node_expires_only_its_own_overdue_leases(join: Join) -> None:
    a, b = await join("a"), await join("b")
    job_id = await running_job(a, 4, max_receive_count=3)
    mine = await a.lease(job_id, 2, 0.001)
    theirs = await b.lease(job_id, 2, 0.001)
    # b's leases are b's to renew (its outcomes may wait out an outage): a leaves them.
    expired = await a.expire_leases(float("inf"))
    assert sorted(seq for _, seq, _ in expired) == sorted(lease.seq for lease in mine)
    ok = [Success(lease.seq, lease.token, 0.1, None) for lease in theirs]
    assert await b.succeed(job_id, ok) == 2


async def test_a_heartbeat_is_not_held_up_by_this_nodes_writes(join: Join) -> None:
    a = await join("a")
    job_id = await running_job(a, 1)
    async with a._transaction() as db:
        await db.execute("SELECT 1")
        # The writer is busy (held up behind another node's lock, say): still alive.
        assert await asyncio.wait_for(a.heartbeat(), 10) is True
    assert await a.counts(job_id)


def test_a_nodes_sessions_carry_its_name_unless_the_url_names_them() -> None:
    named = named_connections("postgresql://u:p@db:5432/batchd?sslmode=require", "batchd gpu1")
    assert named == "postgresql://u:p@db:5432/batchd?sslmode=require&application_name=batchd+gpu1"
    given = "postgresql://db/batchd?application_name=mine"
    assert named_connections(given, "batchd gpu1") == given


async def test_two_nodes_deploying_one_api_at_once_number_two_versions(join: Join) -> None:
    a, b = await join("a"), await join("b")
    for _ in range(5):
        records = await asyncio.gather(
            a.add_api_version("same", {"n": 1}, {}), b.add_api_version("same", {"n": 2}, {})
        )
        assert sorted(r.version for r in records)[1] - sorted(r.version for r in records)[0] == 1
    assert sorted(api.version for api in await a.api_versions("same")) == list(range(1, 11))
