"""The embedded SQLite store (``store.SqliteStore``).

Each role's SQLite-only part (the algorithms both SQL backends share are in
:mod:`batchd.store.sqlroles`) over a core (``core``): connections, the write
transaction, migrations. The SQL is in named statements (``sql/*.sql``) and numbered
migrations (``migrations/``), read once at import by ``queries``. Imports the store's
records, constants and statuses; nothing above the store.
"""
