"""The store conformance suite: every role's promises, run against each backend.

A backend is one entry of BACKENDS: a function that opens a store at a location made
for the test (a SQLite file in the test's directory, a fresh PostgreSQL schema), and
the same location may be opened again (`reopen`) to check what survives.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from batchd.constants import DB_FILENAME
from batchd.store.roles import Store
from batchd.store.sqlite.store import SqliteStore
from tests import pg

Opener = Callable[[], Awaitable[Store]]


def _sqlite(request: pytest.FixtureRequest) -> Iterator[Opener]:
    location = request.getfixturevalue("tmp_path") / DB_FILENAME

    async def open_store() -> Store:
        store = SqliteStore(location)
        await store.open()
        return store

    yield open_store


def _postgres(request: pytest.FixtureRequest) -> Iterator[Opener]:
    from batchd.store.postgres.store import PostgresStore

    cluster: pg.Cluster = request.getfixturevalue("postgres_cluster")
    with cluster.fresh_schema() as dsn:

        async def open_store() -> Store:
            store = PostgresStore(dsn)
            await store.open()
            return store

        yield open_store


BACKENDS: dict[str, Callable[[pytest.FixtureRequest], Iterator[Opener]]] = {
    "postgres": _postgres,
    "sqlite": _sqlite,
}


@pytest.fixture(params=sorted(BACKENDS))
def reopen(request: pytest.FixtureRequest) -> Iterator[Opener]:
    """Opens a store at this test's location: again and again, the same queue."""
    yield from BACKENDS[request.param](request)


@pytest.fixture
async def store(reopen: Opener) -> AsyncIterator[Store]:
    opened = await reopen()
    yield opened
    await opened.close()
