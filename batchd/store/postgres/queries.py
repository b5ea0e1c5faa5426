"""The PostgreSQL store's SQL, read once at import: the named statements of ``sql/*.sql``
and the numbered migrations of ``migrations/`` (see :mod:`batchd.store.sqlfiles`)."""

from __future__ import annotations

from batchd.store.sqlfiles import NamedQueries, migrations

_PACKAGE = __name__.rpartition(".")[0]
QUERIES = NamedQueries(_PACKAGE, "sql")
SQL = QUERIES.sql

# (file name, script) of migration 1, 2... in order: the schema version is their count.
# A script runs whole (PostgreSQL takes several statements in one simple query).
MIGRATIONS = migrations(_PACKAGE, "migrations")
