"""The durable queue: records and role protocols (``records``, ``roles``), the SQLite
backend (``sqlite/``), the PostgreSQL backend (``postgres/``, the ``postgres`` extra), what
the SQL backends share (``sqlfiles``, ``rows``, ``groupcommit``, and ``sqlcore`` and
``sqlroles``: the roles' algorithms both run), payload chunks and the user-facing
renderings of jobs (``views``).

May import config, constants, errors and statuses; nothing above it (no metrics: the
daemon passes an ``on_commit`` hook). Light on purpose: the backend loads on open_store.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from batchd.store.roles import Store


class DatabaseUnavailable(Exception):
    """The queue's database server cannot be used (unreachable, refused, no driver)."""


class NodeNameTaken(Exception):
    """Another live daemon sharing the queue already uses this daemon's node_name."""


def open_store(
    state_dir: Path,
    synchronous: str,
    on_commit: Callable[[float], None] | None = None,
    database: str | None = None,
) -> Store:
    """The queue: on the PostgreSQL server at `database` when given, else the SQLite file
    in the state directory. `on_commit` is told each commit's time in seconds."""
    if database is not None:
        try:
            from batchd.store.postgres.store import PostgresStore
        except ImportError as exc:
            raise DatabaseUnavailable(
                f"{exc}: a PostgreSQL database needs the postgres extra "
                "(pip install 'batchd[postgres]')"
            ) from None
        return PostgresStore(database, on_commit=on_commit)
    from batchd.constants import DB_FILENAME
    from batchd.store.sqlite.store import SqliteStore

    return SqliteStore(state_dir / DB_FILENAME, synchronous=synchronous, on_commit=on_commit)
