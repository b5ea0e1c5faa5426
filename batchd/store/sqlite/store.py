"""The SQLite store: every role over one core (see :class:`batchd.store.records.Store`)."""

from __future__ import annotations

from pathlib import Path

from batchd.store.pauses import SqlPauses
from batchd.store.sqlite.core import OnCommit
from batchd.store.sqlite.jobs import SqliteJobs
from batchd.store.sqlite.leases import SqliteLeases
from batchd.store.sqlite.nodes import SqliteNodes
from batchd.store.sqlite.outcomes import SqliteOutcomes
from batchd.store.sqlite.reads import SqliteReads
from batchd.store.sqlite.retention import SqliteRetention
from batchd.store.sqlroles import SqlApis


class SqliteStore(
    SqliteNodes,
    SqliteJobs,
    SqliteLeases,
    SqliteOutcomes,
    SqliteReads,
    SqliteRetention,
    SqlApis,
    SqlPauses,
):
    # Typed here: the roles' own __init__ pass their arguments on untyped.
    def __init__(
        self, path: Path, synchronous: str = "full", on_commit: OnCommit | None = None
    ) -> None:
        super().__init__(path, synchronous, on_commit)
