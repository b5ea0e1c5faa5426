"""Space given back by the SQLite store: a bounded number of pages per step."""

from __future__ import annotations

from pathlib import Path

from batchd.constants import DB_FILENAME
from batchd.store.records import JobStatus
from batchd.store.sqlite.store import SqliteStore
from tests.store.support import new_job


async def test_reclaim_space_frees_the_pages_asked_for(tmp_path: Path, store: SqliteStore) -> None:
    job = await store.create_job(new_job(), [b'["' + b"x" * 100_000 + b'"]'] * 50)
    assert await store.set_status(job.job_id, JobStatus.STOPPED)
    await store.checkpoint()
    size = (tmp_path / DB_FILENAME).stat().st_size
    assert await store.prune_job(job.job_id) == 2
    free = await store.reclaim_space(1)
    assert free > 1000
    assert await store.reclaim_space(100) == free - 100
    assert await store.reclaim_space(10**9) == 0
    await store.checkpoint()
    assert (tmp_path / DB_FILENAME).stat().st_size < size - 1000 * 4096


async def test_checkpoint_truncates_the_wal(tmp_path: Path, store: SqliteStore) -> None:
    wal = tmp_path / f"{DB_FILENAME}-wal"
    await store.create_job(new_job(), [b"[1]"] * 1000)
    assert wal.stat().st_size > 0
    await store.checkpoint()
    assert wal.stat().st_size == 0
    assert [job.total_batch_count for job in await store.active_jobs()] == [1000]
