"""The durable queue: records and role protocols (``records``, ``roles``), the SQLite backend
(``sqlite/``), payload chunks and the user-facing renderings of jobs (``views``).

May import config, constants, errors and statuses; nothing above it (no metrics: the
daemon passes an ``on_commit`` hook). Light on purpose: the backend loads on open_store.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from batchd.store.roles import Store


def open_store(
    state_dir: Path, synchronous: str, on_commit: Callable[[float], None] | None = None
) -> Store:
    """The state directory's store; `on_commit` is told each commit's time in seconds."""
    from batchd.constants import DB_FILENAME
    from batchd.store.sqlite.store import SqliteStore

    return SqliteStore(state_dir / DB_FILENAME, synchronous=synchronous, on_commit=on_commit)
