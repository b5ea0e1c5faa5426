"""The store conformance suite: every role's promises, run against each backend.

A backend is one entry of BACKENDS: a function that opens a store at a location made
for the test (a SQLite file today; a PostgreSQL schema will be one more entry), and the
same location may be opened again (`reopen`) to check what survives.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from batchd.constants import DB_FILENAME
from batchd.store.roles import Store
from batchd.store.sqlite.store import SqliteStore

Opener = Callable[[], Awaitable[Store]]


def _sqlite(location: Path) -> Opener:
    async def open_store() -> Store:
        store = SqliteStore(location / DB_FILENAME)
        await store.open()
        return store

    return open_store


BACKENDS: dict[str, Callable[[Path], Opener]] = {"sqlite": _sqlite}


@pytest.fixture(params=sorted(BACKENDS))
def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens a store at this test's location: again and again, the same queue."""
    return BACKENDS[request.param](tmp_path)


@pytest.fixture
async def store(reopen: Opener) -> AsyncIterator[Store]:
    opened = await reopen()
    yield opened
    await opened.close()
