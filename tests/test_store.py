"""The SQLite store against a real database file: the queue's promises, one by one."""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from batchd.constants import CHUNK_BATCHES, CHUNK_MAX_BYTES, DB_FILENAME, SCHEMA_VERSION
from batchd.store.base import BatchState, Failure, JobStatus, NewJob, Success, new_job_id
from batchd.store.sqlite import SqliteStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / DB_FILENAME)
    await store.open()
    yield store
    await store.close()


def new_job(max_receive_count: int = 2, api: str = "demo") -> NewJob:
    return NewJob(
        job_id=new_job_id(),
        api_name=api,
        api_version=1,
        kind="item_list",
        workers=1,
        config={"a": 1},
        timeout=None,
        max_receive_count=max_receive_count,
        priority=0,
        created_at=time.time(),
    )


def payloads(count: int) -> list[bytes]:
    return [json.dumps([i]).encode() for i in range(count)]


async def running_job(store: SqliteStore, batches: int, max_receive_count: int = 2) -> str:
    job = await store.create_job(new_job(max_receive_count), payloads(batches))
    assert await store.set_status(job.job_id, JobStatus.RUNNING)
    return job.job_id


async def test_schema_is_versioned_and_wal(tmp_path: Path, store: SqliteStore) -> None:
    conn = sqlite3.connect(tmp_path / DB_FILENAME)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


async def test_refuses_database_from_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(RuntimeError, match="schema version"):
        await SqliteStore(path).open()


async def test_a_schema_1_database_gets_counters_recounted_from_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    store = SqliteStore(path)
    await store.open()
    job_id = await running_job(store, 6, max_receive_count=1)
    leases = await store.lease(job_id, 4, 60)
    await store.succeed(
        job_id, [Success(lease.seq, lease.token, 2.0, None) for lease in leases[:2]]
    )
    await store.fail(job_id, Failure(leases[2].seq, leases[2].token, "boom", None), 1)
    await store.close()
    # Back to schema 1: a row for every batch, no counters, no chunks.
    conn = sqlite3.connect(path)
    (key,) = conn.execute("SELECT key FROM jobs").fetchone()
    conn.executemany(
        "INSERT INTO batches (id, state, payload) VALUES (?, 'queued', '[0]')",
        [((key << 32) + seq,) for seq in (5, 6)],
    )
    for column in ("queued", "leased", "succeeded", "dead", "failure"):
        conn.execute(f"ALTER TABLE jobs DROP COLUMN {column}_count")
    conn.execute("ALTER TABLE jobs DROP COLUMN duration_sum")
    conn.execute("ALTER TABLE jobs DROP COLUMN materialized")
    conn.execute("DROP TABLE chunks")
    conn.execute("DROP INDEX batches_queued")
    conn.execute("DROP INDEX batches_dead")
    conn.execute("CREATE INDEX batches_by_state ON batches (state, id)")
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()
    store = SqliteStore(path)
    await store.open()
    try:
        counts = await store.counts(job_id)
        assert (counts.queued, counts.leased, counts.succeeded, counts.dead) == (2, 1, 2, 1)
        assert counts.failed_attempts == 1 and counts.average_time == 2.0
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"batches_queued", "batches_dead"} <= indexes and "batches_by_state" not in indexes
    conn.close()


async def lease_all(store: SqliteStore, job_id: str) -> list[tuple[int, bytes]]:
    """(seq, payload) of every batch of a running job, leased grant after grant."""
    leased: list[tuple[int, bytes]] = []
    while grant := await store.lease(job_id, 10_000, 60):
        leased += [(lease.seq, lease.payload) for lease in grant]
    return leased


def chunk_rows(path: Path, job_id: str) -> list[tuple[int, int]]:
    """(batches before the chunk, its length in bytes) of each of the job's chunks."""
    with sqlite3.connect(path) as conn:
        (key,) = conn.execute("SELECT key FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return conn.execute(
            "SELECT id - (? << 32), length(payloads) FROM chunks WHERE id >> 32 = ? ORDER BY id",
            (key, key),
        ).fetchall()


async def test_chunks_are_bounded_by_bytes_and_leased_in_order(
    tmp_path: Path, store: SqliteStore
) -> None:
    # Batches of 1 MiB, then small ones: a few big batches per chunk, then thousands.
    big = [json.dumps(["x" * 1024 * 1024, i], separators=(",", ":")).encode() for i in range(9)]
    sent = big + payloads(CHUNK_BATCHES + 10)
    job = await store.create_job(new_job(), sent)
    rows = chunk_rows(tmp_path / DB_FILENAME, job.job_id)
    assert max(length for _, length in rows) <= CHUNK_MAX_BYTES
    # The last big chunk has room for small batches, up to CHUNK_BATCHES in all.
    assert [before for before, _ in rows] == [0, 3, 6, 6 + CHUNK_BATCHES]
    assert await store.set_status(job.job_id, JobStatus.RUNNING)
    assert await lease_all(store, job.job_id) == list(enumerate(sent, start=1))


async def test_a_job_larger_than_sqlites_value_limit_is_stored(store: SqliteStore) -> None:
    """Issue 11 case 4 at small scale: SQLite refuses a value over SQLITE_LIMIT_LENGTH (1e9
    bytes by default, 8 MiB here), and a job is stored in chunks that each stay under it."""
    writer = store._w
    await writer._execute(writer._conn.setlimit, sqlite3.SQLITE_LIMIT_LENGTH, 8 * 1024 * 1024)
    sent = [json.dumps(["x" * 100_000, i]).encode() for i in range(400)]
    job = await store.create_job(new_job(), sent)
    assert job.total_batch_count == 400
    assert await store.set_status(job.job_id, JobStatus.RUNNING)
    assert [payload for _, payload in await lease_all(store, job.job_id)] == [
        json.dumps(json.loads(payload), separators=(",", ":")).encode() for payload in sent
    ]


async def test_a_schema_2_database_gets_its_chunks_renumbered(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    store = SqliteStore(path)
    await store.open()
    sent = payloads(2 * CHUNK_BATCHES + 5)
    job_id = (await store.create_job(new_job(), sent)).job_id
    await store.close()
    # Schema 2 numbered a job's chunks 0, 1, 2... each of 4096 batches.
    conn = sqlite3.connect(path)
    ids = [row[0] for row in conn.execute("SELECT id FROM chunks ORDER BY id")]
    for index, id_ in enumerate(ids):
        conn.execute("UPDATE chunks SET id = ? WHERE id = ?", ((id_ >> 32 << 32) + index, id_))
    conn.execute("PRAGMA user_version=2")
    conn.commit()
    conn.close()
    store = SqliteStore(path)
    await store.open()
    try:
        assert await store.set_status(job_id, JobStatus.RUNNING)
        assert await lease_all(store, job_id) == list(enumerate(sent, start=1))
    finally:
        await store.close()
    assert [before for before, _ in chunk_rows(path, job_id)] == [0, 4096, 8192]


async def test_create_job_stores_every_batch(store: SqliteStore) -> None:
    job = await store.create_job(new_job(), payloads(5))
    assert job.total_batch_count == 5
    assert job.status is JobStatus.PENDING
    counts = await store.counts(job.job_id)
    assert (counts.queued, counts.leased, counts.succeeded, counts.dead) == (5, 0, 0, 0)


async def test_pending_job_grants_no_lease(store: SqliteStore) -> None:
    job = await store.create_job(new_job(), payloads(2))
    assert await store.lease(job.job_id, 10, 60) == []


async def test_lease_in_order_and_succeed(store: SqliteStore) -> None:
    job_id = await running_job(store, 3)
    leases = await store.lease(job_id, 2, 60)
    assert [(lease.seq, lease.attempt, lease.payload) for lease in leases] == [
        (1, 1, b"[0]"),
        (2, 1, b"[1]"),
    ]
    ok = [Success(lease.seq, lease.token, 0.5, b'{"r":1}') for lease in leases]
    assert await store.succeed(job_id, ok) == 2
    counts = await store.counts(job_id)
    assert (counts.queued, counts.succeeded, counts.average_time) == (1, 2, 0.5)
    results = [(r.seq, r.result) async for r in store.results(job_id)]
    assert results == [(1, b'{"r":1}'), (2, b'{"r":1}')]


async def test_stale_token_changes_nothing(store: SqliteStore) -> None:
    job_id = await running_job(store, 1, max_receive_count=3)
    (first,) = await store.lease(job_id, 1, 60)
    assert await store.expire_leases(math.inf) == [(job_id, 1, BatchState.QUEUED)]
    (second,) = await store.lease(job_id, 1, 60)
    assert second.attempt == 2 and second.token != first.token
    # The superseded attempt reports late: refused, both as success and as failure.
    assert await store.succeed(job_id, [Success(1, first.token, 1.0, None)]) == 0
    assert await store.fail(job_id, Failure(1, first.token, "late", None), 3) is None
    counts = await store.counts(job_id)
    assert (counts.leased, counts.succeeded, counts.failed_attempts) == (1, 0, 1)
    assert await store.succeed(job_id, [Success(1, second.token, 1.0, None)]) == 1
    assert (await store.counts(job_id)).succeeded == 1


async def test_failures_requeue_then_dead_letter(store: SqliteStore) -> None:
    job_id = await running_job(store, 1, max_receive_count=2)
    (lease,) = await store.lease(job_id, 1, 60)
    assert (
        await store.fail(job_id, Failure(1, lease.token, "boom 1", "tb1"), 2) is BatchState.QUEUED
    )
    (lease,) = await store.lease(job_id, 1, 60)
    assert await store.fail(job_id, Failure(1, lease.token, "boom 2", "tb2"), 2) is BatchState.DEAD
    assert await store.lease(job_id, 1, 60) == []
    dead = [d async for d in store.dead_letters(job_id)]
    assert [(d.seq, d.payload, d.attempts, d.error, d.traceback) for d in dead] == [
        (1, b"[0]", 2, "boom 2", "tb2")
    ]
    counts = await store.counts(job_id)
    assert (counts.dead, counts.failed_attempts) == (1, 2)


async def test_release_does_not_burn_an_attempt(store: SqliteStore) -> None:
    job_id = await running_job(store, 1)
    (lease,) = await store.lease(job_id, 1, 60)
    assert await store.release(job_id, [(1, lease.token)]) == 1
    (again,) = await store.lease(job_id, 1, 60)
    assert again.attempt == 1


async def test_only_expired_leases_expire_and_renewal_pushes_expiry(store: SqliteStore) -> None:
    job_id = await running_job(store, 2)
    short, long_ = await store.lease(job_id, 2, 60)
    assert await store.renew([(job_id, long_.seq, long_.token)], 3600) == 1
    expired = await store.expire_leases(time.time() + 120)
    assert expired == [(job_id, short.seq, BatchState.QUEUED)]
    assert (await store.counts(job_id)).leased == 1


async def test_terminal_status_is_final_and_voids_leases(store: SqliteStore) -> None:
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


async def test_jobs_survive_reopen(tmp_path: Path) -> None:
    first = SqliteStore(tmp_path / DB_FILENAME)
    await first.open()
    job_id = await running_job(first, 3)
    await first.lease(job_id, 1, 60)
    await first.close()
    second = SqliteStore(tmp_path / DB_FILENAME)
    await second.open()
    try:
        assert [job.job_id for job in await second.active_jobs()] == [job_id]
        counts = await second.counts(job_id)
        assert (counts.queued, counts.leased) == (2, 1)
    finally:
        await second.close()


async def test_api_versions(store: SqliteStore) -> None:
    one = await store.add_api_version("demo", {"v": 1}, {})
    two = await store.add_api_version("demo", {"v": 2}, {"K": "V"})
    assert (one.version, two.version) == (1, 2)
    latest = await store.get_api("demo")
    assert latest is not None and latest.spec == {"v": 2} and latest.dotenv == {"K": "V"}
    first = await store.get_api("demo", 1)
    assert first is not None and first.spec == {"v": 1}
    assert await store.delete_api("demo")
    assert await store.get_api("demo") is None
    assert (await store.add_api_version("demo", {"v": 3}, {})).version == 3


async def test_list_jobs_newest_first(store: SqliteStore) -> None:
    ids = [(await store.create_job(new_job(), payloads(1))).job_id for _ in range(3)]
    listed = [job.job_id for job in await store.list_jobs("demo", 10)]
    assert listed == list(reversed(ids))
    assert sorted(ids, reverse=True) == listed


async def test_concurrent_successes_share_commits_and_keep_their_counts(
    store: SqliteStore,
) -> None:
    import asyncio

    job_id = await running_job(store, 50)
    leases = await store.lease(job_id, 50, 60)
    calls = [
        store.succeed(job_id, [Success(lease.seq, lease.token, 0.1, b"1")]) for lease in leases
    ]
    stale = store.succeed(job_id, [Success(leases[0].seq, leases[0].token + 1, 0.1, b"1")])
    counts = await asyncio.gather(*calls, stale)
    assert counts == [1] * 50 + [0]
    assert (await store.counts(job_id)).succeeded == 50


async def test_results_and_dead_letters_page_through_every_row(store: SqliteStore) -> None:
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


async def test_a_grant_of_big_payloads_stops_at_its_byte_budget(store: SqliteStore) -> None:
    from batchd.constants import GRANT_MAX_BYTES

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


async def test_one_payload_over_the_budget_is_still_leased(store: SqliteStore) -> None:
    huge = json.dumps(["y" * (17 * 2**20)]).encode()
    job = await store.create_job(new_job(), [huge, b"[1]"])
    assert await store.set_status(job.job_id, JobStatus.RUNNING)
    assert [lease.seq for lease in await store.lease(job.job_id, 10, 60)] == [1]
    assert [lease.seq for lease in await store.lease(job.job_id, 10, 60)] == [2]
