"""The embedded SQLite store (``store.SqliteStore``): the only code in batchd that runs SQL.

One module per role of :class:`batchd.store.records.Store` over a shared core (``core``):
connections, the write transaction, migrations. The SQL is in named statements
(``sql/*.sql``) and numbered migrations (``migrations/``), read once at import by
``queries``. Imports the store's records, constants and statuses; nothing above the store.
"""
