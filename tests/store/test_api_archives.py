"""ApiStore: project archives by the digest of their snapshot, kept where the database is
shared (PostgreSQL) and not on SQLite, where a node's own snapshots are the copy."""

from __future__ import annotations

import os

from batchd.store.records import JobStatus
from batchd.store.roles import Store
from batchd.store.sqlite.store import SqliteStore
from tests.store.conftest import Opener
from tests.store.support import new_job, payloads


def _kept(store: Store, archive: bytes) -> bytes | None:
    """What api_archive answers for an archive saved on this backend."""
    return None if isinstance(store, SqliteStore) else archive


async def test_an_archive_is_kept_byte_for_byte(reopen: Opener) -> None:
    store = await reopen()
    # Every byte value, NULs included, and big enough to be stored out of line.
    archive = bytes(range(256)) * 4 + os.urandom(8 * 1024 * 1024) + b"\0\0"
    try:
        await store.save_api_archive("demo", "d1", archive)
        # The same digest again holds the same project: the first archive stays.
        await store.save_api_archive("demo", "d1", b"another upload of it")
        await store.save_api_archive("demo", "d2", b"second\0")
        assert await store.api_archive("demo", "d1") == _kept(store, archive)
        assert await store.api_archive("demo", "d2") == _kept(store, b"second\0")
        # Unknown digests, and a digest under another name, have none.
        assert await store.api_archive("demo", "d3") is None
        assert await store.api_archive("other", "d1") is None
    finally:
        await store.close()
    again = await reopen()
    try:
        assert await again.api_archive("demo", "d1") == _kept(again, archive)
    finally:
        await again.close()


async def test_deleting_an_api_drops_its_archives_once_none_of_its_jobs_is_unfinished(
    store: Store,
) -> None:
    await store.add_api_version("demo", {"v": 1}, {})
    await store.save_api_archive("demo", "d1", b"first")
    await store.add_api_version("demo", {"v": 2}, {})
    await store.save_api_archive("demo", "d2", b"second")
    await store.add_api_version("other", {"v": 1}, {})
    await store.save_api_archive("other", "d1", b"third")
    running = await store.create_job(new_job(api="demo", api_version=1), payloads(2))
    assert await store.set_status(running.job_id, JobStatus.RUNNING)
    # Another API's unfinished job does not keep this one's archives.
    busy = await store.create_job(new_job(api="other", api_version=1), payloads(1))
    assert await store.set_status(busy.job_id, JobStatus.RUNNING)

    assert await store.delete_api("demo")
    assert await store.api_archive("demo", "d1") == _kept(store, b"first")
    assert await store.api_archive("demo", "d2") == _kept(store, b"second")

    # Once that job has ended, the next deletion of the name takes them.
    assert await store.set_status(running.job_id, JobStatus.STOPPED)
    await store.add_api_version("demo", {"v": 3}, {})
    assert await store.delete_api("demo")
    assert [await store.api_archive("demo", d) for d in ("d1", "d2")] == [None, None]
    assert await store.api_archive("other", "d1") == _kept(store, b"third")
