"""LeaseStore: leasing batches to workers, renewing, releasing and expiring leases."""

from __future__ import annotations

import json
import math
import time

from batchd.constants import GRANT_MAX_BYTES
from batchd.store.records import BatchState, Failure, JobStatus, Success
from batchd.store.roles import Store
from tests.store.support import lease_all, new_job, payloads, running_job


async def test_pending_job_grants_no_lease(store: Store) -> None:
    job = await store.create_job(new_job(), payloads(2))
    assert await store.lease(job.job_id, 10, 60) == []


async def test_lease_in_order_with_one_token_per_grant(store: Store) -> None:
    job_id = await running_job(store, 5)
    first = await store.lease(job_id, 2, 60)
    second = await store.lease(job_id, 10, 60)
    assert [(lease.job_id, lease.seq, lease.attempt, lease.payload) for lease in first] == [
        (job_id, 1, 1, b"[0]"),
        (job_id, 2, 1, b"[1]"),
    ]
    assert [lease.seq for lease in second] == [3, 4, 5]
    assert len({lease.token for lease in first}) == 1
    assert {lease.token for lease in second} != {lease.token for lease in first}
    assert await store.lease(job_id, 10, 60) == []
    counts = await store.counts(job_id)
    assert (counts.queued, counts.leased) == (0, 5)


async def test_requeued_batches_are_leased_first_and_oldest_first(store: Store) -> None:
    job_id = await running_job(store, 4, max_receive_count=3)
    grant = await store.lease(job_id, 3, 60)
    for lease in reversed(grant[:2]):
        assert await store.fail(job_id, Failure(lease.seq, lease.token, "x", None), 3) is (
            BatchState.QUEUED
        )
    again = await store.lease(job_id, 3, 60)
    assert [(lease.seq, lease.attempt) for lease in again] == [(1, 2), (2, 2), (4, 1)]


async def test_release_does_not_burn_an_attempt(store: Store) -> None:
    job_id = await running_job(store, 1)
    (lease,) = await store.lease(job_id, 1, 60)
    assert await store.release(job_id, [(1, lease.token)]) == 1
    (again,) = await store.lease(job_id, 1, 60)
    assert again.attempt == 1


async def test_release_counts_only_current_leases(store: Store) -> None:
    job_id = await running_job(store, 3)
    grant = await store.lease(job_id, 3, 60)
    token = grant[0].token
    assert await store.release(job_id, [(1, token), (2, token + 1), (3, token)]) == 2
    counts = await store.counts(job_id)
    assert (counts.queued, counts.leased, counts.failed_attempts) == (2, 1, 0)
    assert await store.release(job_id, [(1, token)]) == 0


async def test_only_expired_leases_expire_and_renewal_pushes_expiry(store: Store) -> None:
    job_id = await running_job(store, 2)
    short, long_ = await store.lease(job_id, 2, 60)
    assert await store.renew([(job_id, long_.seq, long_.token)], 3600) == 1
    expired = await store.expire_leases(time.time() + 120)
    assert expired == [(job_id, short.seq, BatchState.QUEUED)]
    assert (await store.counts(job_id)).leased == 1


async def test_renew_skips_stale_tokens_and_spans_jobs(store: Store) -> None:
    one = await running_job(store, 1)
    two = await running_job(store, 1)
    (a,) = await store.lease(one, 1, 60)
    (b,) = await store.lease(two, 1, 60)
    renewed = await store.renew([(one, a.seq, a.token), (two, b.seq, b.token + 1)], 3600)
    assert renewed == 1
    assert await store.expire_leases(time.time() + 120) == [(two, 1, BatchState.QUEUED)]


async def test_expiry_is_a_failed_attempt_with_its_reason(store: Store) -> None:
    job_id = await running_job(store, 2, max_receive_count=1)
    await store.lease(job_id, 2, 60)
    expired = await store.expire_leases(math.inf, "the worker vanished")
    assert expired == [(job_id, 1, BatchState.DEAD), (job_id, 2, BatchState.DEAD)]
    dead = [(d.seq, d.attempts, d.error, d.traceback) async for d in store.dead_letters(job_id)]
    assert dead == [(1, 1, "the worker vanished", None), (2, 1, "the worker vanished", None)]
    counts = await store.counts(job_id)
    assert (counts.leased, counts.dead, counts.failed_attempts) == (0, 2, 2)
    assert await store.expire_leases(math.inf) == []


async def test_expiry_is_narrowed_to_the_jobs_asked_for(store: Store) -> None:
    one = await running_job(store, 1)
    two = await running_job(store, 1)
    await store.lease(one, 1, 60)
    await store.lease(two, 1, 60)
    assert await store.expire_leases(math.inf, job_ids=[two]) == [(two, 1, BatchState.QUEUED)]
    assert (await store.counts(one)).leased == 1
    assert await store.expire_leases(math.inf, job_ids=[]) == []
    assert await store.expire_leases(math.inf) == [(one, 1, BatchState.QUEUED)]


async def test_a_finished_job_has_no_leases_to_expire(store: Store) -> None:
    job_id = await running_job(store, 1)
    (lease,) = await store.lease(job_id, 1, 60)
    assert await store.succeed(job_id, [Success(1, lease.token, 0.1, None)]) == 1
    assert await store.set_status(job_id, JobStatus.SUCCEEDED)
    assert await store.expire_leases(math.inf) == []


async def test_a_grant_of_big_payloads_stops_at_its_byte_budget(store: Store) -> None:
    # Each payload is a MiB less 2 bytes: 16 fit in the 16 MiB budget, the 17th does not.
    assert GRANT_MAX_BYTES == 16 * 2**20
    big = json.dumps(["x" * (2**20 - 6)]).encode()
    assert len(big) == 2**20 - 2
    job = await store.create_job(new_job(), [big] * 20)
    assert await store.set_status(job.job_id, JobStatus.RUNNING)
    first = await store.lease(job.job_id, 100, 60)
    assert [lease.seq for lease in first] == list(range(1, 17))
    assert all(lease.payload == big for lease in first)
    rest = await store.lease(job.job_id, 100, 60)
    assert [lease.seq for lease in rest] == [17, 18, 19, 20]
    counts = await store.counts(job.job_id)
    assert (counts.queued, counts.leased) == (0, 20)


async def test_one_payload_over_the_budget_is_still_leased(store: Store) -> None:
    huge = json.dumps(["y" * (17 * 2**20)]).encode()
    job = await store.create_job(new_job(), [huge, b"[1]"])
    assert await store.set_status(job.job_id, JobStatus.RUNNING)
    assert [lease.seq for lease in await store.lease(job.job_id, 10, 60)] == [1]
    assert [lease.seq for lease in await store.lease(job.job_id, 10, 60)] == [2]


async def test_payloads_come_back_as_compact_json(store: Store) -> None:
    job = await store.create_job(new_job(), [b'{"a": 1,  "b": [1, 2]}', b'"\\u00e9"'])
    assert await store.set_status(job.job_id, JobStatus.RUNNING)
    assert await lease_all(store, job.job_id) == [(1, b'{"a":1,"b":[1,2]}'), (2, '"é"'.encode())]
