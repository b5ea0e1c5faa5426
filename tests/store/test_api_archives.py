"""ApiStore: the project archive each version was deployed from, kept where the database
is shared (PostgreSQL) and not on SQLite, where a node's own snapshots are the copy."""

from __future__ import annotations

import os

from batchd.store.records import JobStatus
from batchd.store.roles import Store
from batchd.store.sqlite.store import SqliteStore
from tests.store.conftest import Opener
from tests.store.support import new_job, payloads


def _kept(store: Store, archive: bytes) -> bytes | None:
    """What api_archive answers for a version stored with `archive`, on this backend."""
    return None if isinstance(store, SqliteStore) else archive


async def test_an_archive_is_stored_with_its_version_byte_for_byte(reopen: Opener) -> None:
    store = await reopen()
    # Every byte value, NULs included, and big enough to be stored out of line.
    archive = bytes(range(256)) * 4 + os.urandom(8 * 1024 * 1024) + b"\0\0"
    try:
        one = await store.add_api_version("demo", {"v": 1}, {}, archive)
        two = await store.add_api_version("demo", {"v": 2}, {"K": "V"})
        assert (one.version, two.version) == (1, 2)
        assert await store.api_archive("demo", 1) == _kept(store, archive)
        # A version deployed without one, and versions that do not exist, have none.
        assert await store.api_archive("demo", 2) is None
        assert await store.api_archive("demo", 3) is None
        assert await store.api_archive("other", 1) is None
    finally:
        await store.close()
    again = await reopen()
    try:
        assert await again.api_archive("demo", 1) == _kept(again, archive)
        latest = await again.get_api("demo")
        assert latest is not None and latest.spec == {"v": 2} and latest.dotenv == {"K": "V"}
    finally:
        await again.close()


async def test_deleting_an_api_keeps_the_archives_its_unfinished_jobs_run(store: Store) -> None:
    first, second, third = b"first\0", b"second\0", b"third\0"
    await store.add_api_version("demo", {"v": 1}, {}, first)
    await store.add_api_version("demo", {"v": 2}, {}, second)
    await store.add_api_version("other", {"v": 1}, {}, third)
    running = await store.create_job(new_job(api="demo", api_version=1), payloads(2))
    assert await store.set_status(running.job_id, JobStatus.RUNNING)
    # A finished job of version 2 does not keep its archive.
    done = await store.create_job(new_job(api="demo", api_version=2), payloads(1))
    assert await store.set_status(done.job_id, JobStatus.SUCCEEDED)

    assert await store.delete_api("demo")
    assert await store.api_archive("demo", 1) == _kept(store, first)
    assert await store.api_archive("demo", 2) is None
    assert await store.api_archive("other", 1) == _kept(store, third)

    # Once that job has ended, the next deletion of the name takes its archive too.
    assert await store.set_status(running.job_id, JobStatus.STOPPED)
    assert (await store.add_api_version("demo", {"v": 3}, {}, b"fourth")).version == 3
    assert await store.delete_api("demo")
    assert [await store.api_archive("demo", v) for v in (1, 2, 3)] == [None, None, None]
    assert await store.api_archive("other", 1) == _kept(store, third)
