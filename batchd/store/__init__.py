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
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

if TYPE_CHECKING:
    from batchd.store.roles import Store


class DatabaseUnavailable(Exception):
    """The queue's database server cannot be used (unreachable, refused, restarting, no
    driver). A write that raised it never happened or (its connection lost during the
    COMMIT) happened in full: an outcome, a lease's renewal or release may be tried
    again (a stale lease token makes the repeat change nothing); a new job's admission
    may have happened. `retry_after`: about how many seconds until the store tries the
    server again."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NodeNameTaken(Exception):
    """Another live daemon sharing the queue already uses this daemon's node_name."""


def named_connections(dsn: str, name: str) -> str:
    """`dsn` with its sessions named `name` in pg_stat_activity (application_name),
    unless the URL names them already: an operator sees which node holds what."""
    parts = urlsplit(dsn)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(key == "application_name" for key, _ in query):
        return dsn
    return urlunsplit(parts._replace(query=urlencode([*query, ("application_name", name)])))


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
