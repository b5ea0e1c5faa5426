"""The ``NodeStore`` role on a queue no other daemon can open (the state directory is
locked): this daemon is the only node, so its claims are granted (its own max_workers
and each job's workers bound it), nobody is swept, and nothing needs telling."""

from __future__ import annotations

import math
from collections.abc import Callable

from batchd.store.records import Expired, HookClaim
from batchd.store.sqlite.core import SqliteCore
from batchd.store.sqlroles import SqlLeases


class SqliteNodes(SqliteCore, SqlLeases):
    shared = False

    async def join(
        self, name: str, instance: str, capacity: tuple[int, int], node_timeout: float, reason: str
    ) -> Expired:
        # Whatever is leased was leased by this node's previous run, which is gone.
        return await self.expire_leases(math.inf, reason)

    async def heartbeat(self) -> bool:
        return True

    async def sweep_lost(self, node_timeout: float) -> tuple[list[str], Expired]:
        return [], []

    async def claim_worker(self, job_id: str, workers: int) -> int | None:
        return 0

    async def release_worker(self, job_id: str, claim: int) -> None:
        return None

    async def claim_hook(self, job_id: str) -> HookClaim:
        return HookClaim.CLAIMED

    async def leave(self) -> None:
        return None

    async def listen_jobs(self, on_change: Callable[[str], None]) -> bool:
        return True
