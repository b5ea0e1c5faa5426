"""The SQLite store's SQL, read once at import: the named statements of ``sql/*.sql`` and
the numbered migrations of ``migrations/`` (see :mod:`batchd.store.sqlfiles`)."""

from __future__ import annotations

import sqlite3

from batchd.store.sqlfiles import NamedQueries, migrations

QUERIES = NamedQueries(__name__.rpartition(".")[0], "sql")
SQL = QUERIES.sql


def statements(script: str) -> list[str]:
    """A script's statements, one by one (a transaction cannot run ``executescript``)."""
    found: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        if not pending and (not line.strip() or line.lstrip().startswith("--")):
            continue
        pending += line
        if sqlite3.complete_statement(pending):
            found.append(pending.strip())
            pending = ""
    if pending.strip():
        raise ValueError(f"an unfinished statement: {pending.strip()[:80]!r}")
    return found


# (file name, statements) of migration 1, 2... in order: the schema version is their count.
MIGRATIONS = [
    (name, statements(text)) for name, text in migrations(__name__.rpartition(".")[0], "migrations")
]
