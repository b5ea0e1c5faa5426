"""How the SQLite store keeps a job's payloads: chunks bounded by count and bytes."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from batchd.constants import CHUNK_BATCHES, CHUNK_MAX_BYTES, DB_FILENAME
from batchd.store.records import JobStatus
from batchd.store.sqlite.store import SqliteStore
from tests.store.sqlite.rows import chunk_rows
from tests.store.support import lease_all, new_job, payloads


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
    # Each payload comes back as the bytes it was stored as (admission stores compact JSON).
    assert [payload for _, payload in await lease_all(store, job.job_id)] == sent
