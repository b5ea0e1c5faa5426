"""The PostgreSQL store: every role over one core (see :class:`batchd.store.roles.Store`)."""

from __future__ import annotations

from batchd.store.pauses import SqlPauses
from batchd.store.postgres.core import OnCommit
from batchd.store.postgres.jobs import PostgresJobs
from batchd.store.postgres.leases import PostgresLeases
from batchd.store.postgres.nodes import PostgresNodes
from batchd.store.postgres.outcomes import PostgresOutcomes
from batchd.store.postgres.reads import PostgresReads
from batchd.store.postgres.retention import PostgresRetention
from batchd.store.sqlroles import SqlApis


class PostgresStore(
    PostgresNodes,
    PostgresJobs,
    PostgresLeases,
    PostgresOutcomes,
    PostgresReads,
    PostgresRetention,
    SqlApis,
    SqlPauses,
):
    # Several daemons share the database: a version's project goes with it (see SqlApis).
    _keeps_archives = True

    # Typed here: the roles' own __init__ pass their arguments on untyped.
    def __init__(self, dsn: str, on_commit: OnCommit | None = None) -> None:
        super().__init__(dsn, on_commit)
