"""The PostgreSQL store (``store.PostgresStore``), for a queue on a database server.

Each role's PostgreSQL-only part (the algorithms both SQL backends share are in
:mod:`batchd.store.sqlroles`) over a core (``core``): the connections, the write
transaction, migrations under an advisory lock. The SQL is in named statements
(``sql/*.sql``) and numbered migrations (``migrations/``), read once at import by
``queries``. The job log table (``joblogs``) has connections of its own, apart from the
queue's. Needs the ``postgres`` extra (asyncpg). Imports the store's records and
rows, constants and statuses; nothing above the store.
"""
