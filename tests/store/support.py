"""What the conformance tests build jobs with: plain functions over any Store."""

from __future__ import annotations

import json
import time

from batchd.store.records import JobStatus, NewJob, new_job_id
from batchd.store.roles import Store


def new_job(max_receive_count: int = 2, api: str = "demo", **fields: object) -> NewJob:
    values: dict[str, object] = {
        "job_id": new_job_id(),
        "api_name": api,
        "api_version": 1,
        "kind": "item_list",
        "workers": 1,
        "config": {"a": 1},
        "timeout": None,
        "max_receive_count": max_receive_count,
        "priority": 0,
        "created_at": time.time(),
    }
    values.update(fields)
    return NewJob(**values)  # type: ignore[arg-type]


def payloads(count: int) -> list[bytes]:
    return [json.dumps([i]).encode() for i in range(count)]


async def running_job(
    store: Store, batches: int, max_receive_count: int = 2, api: str = "demo"
) -> str:
    job = await store.create_job(new_job(max_receive_count, api), payloads(batches))
    assert await store.set_status(job.job_id, JobStatus.RUNNING)
    return job.job_id


async def lease_all(store: Store, job_id: str) -> list[tuple[int, bytes]]:
    """(seq, payload) of every batch of a running job, leased grant after grant."""
    leased: list[tuple[int, bytes]] = []
    while grant := await store.lease(job_id, 10_000, 60):
        leased += [(lease.seq, lease.payload) for lease in grant]
    return leased
