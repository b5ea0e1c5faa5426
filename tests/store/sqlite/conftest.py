"""The SQLite backend's own tests: its file, its schema, its statements."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from batchd.constants import DB_FILENAME
from batchd.store.sqlite.store import SqliteStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / DB_FILENAME)
    await store.open()
    yield store
    await store.close()
