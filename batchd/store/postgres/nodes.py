"""The nodes sharing the queue (the ``NodeStore`` role): registration and heartbeats,
the sweep of nodes gone silent, worker slots claimed across nodes, the on_job_complete
claim, and the notifications that tell every node a job changed.

A node's row id is the high bits of every lease token it hands out: the leases of a
lost node are found by their tokens, and an outcome it reports after it was swept holds
a token that no batch has any more, so it changes nothing (fencing by token).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any

import asyncpg

from batchd.store import NodeNameTaken
from batchd.store.postgres.core import node_tokens
from batchd.store.postgres.leases import PostgresLeases
from batchd.store.postgres.queries import SQL
from batchd.store.records import BatchState, Expired, HookClaim
from batchd.store.rows import SEQ_MASK, batch_range

log = logging.getLogger("batchd.store")

JOBS_CHANNEL = "batchd_jobs"


class PostgresNodes(PostgresLeases):
    shared = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._listener: asyncpg.Connection | None = None
        # Warned that listening failed: not again until it works (tried every pass).
        self._listen_failed = False

    async def join(
        self, name: str, instance: str, capacity: tuple[int, int], node_timeout: float, reason: str
    ) -> Expired:
        """A new row for this run. An earlier run of the same node (same name, machine
        and state directory, whose lock this daemon now holds) is dead: it is swept at
        once. A live node of the same name elsewhere is refused."""
        async with self._transaction() as db:
            self.node_id = await db.fetchval(
                SQL.register_node, name, instance, os.getpid(), *capacity
            )
            expired: Expired = []
            for node, its_instance, silent_for in await db.fetch(
                SQL.live_nodes_named, name, self.node_id
            ):
                if its_instance != instance and silent_for < node_timeout:
                    raise NodeNameTaken(
                        f"node_name {name!r} is in use by a running daemon ({its_instance}, "
                        f"heard from {silent_for:.1f}s ago): give each daemon its own node_name"
                    )
                expired += await self._sweep_node(db, node, reason)
        return expired

    async def heartbeat(self) -> bool:
        """On the read pool, not behind this node's writes: a write held up by another
        node's locks must not make this one look silent."""
        return await self._scalar(self._r, SQL.heartbeat, self.node_id) is not None

    async def sweep_lost(self, node_timeout: float) -> tuple[list[str], Expired]:
        """In a transaction of its own on the read pool, for the same reason."""
        swept: list[str] = []
        expired: Expired = []
        try:
            async with self._r.acquire() as db, db.transaction():
                for node, name in await db.fetch(SQL.silent_nodes, node_timeout, self.node_id):
                    reason = (
                        f"lease expired: node {name} fell silent for over {node_timeout:g}s "
                        "(node_timeout)"
                    )
                    expired += await self._sweep_node(db, node, reason)
                    swept.append(name)
        except Exception as exc:
            self._raise_if_lost(exc)
            raise
        return swept, expired

    async def _sweep_node(self, db: Any, node: int, reason: str) -> Expired:
        """End a node that is gone: its leases fail, its slots and on_job_complete free."""
        await db.execute(SQL.end_node, node, reason)
        await db.execute(SQL.free_node_workers, node)
        lowest, highest = node_tokens(node)
        expired: Expired = []
        for key, job_id, max_receive_count in await db.fetch(SQL.jobs_holding_leases):
            first, last = batch_range(key)
            rows = await db.fetch(
                SQL.expire_node_leases, max_receive_count, first, last, lowest, highest
            )
            if not rows:
                continue
            await self._insert_expiries(db, list(rows), reason)
            dead = sum(row[1] == BatchState.DEAD for row in rows)
            await self._count(
                db, key, leased=-len(rows), queued=len(rows) - dead, dead=dead, failures=len(rows)
            )
            expired += [(job_id, row[0] & SEQ_MASK, BatchState(row[1])) for row in rows]
        # Jobs' rows after their batches', as every transaction takes them.
        await db.execute(SQL.lost_hooks, node)
        return expired

    async def claim_worker(self, job_id: str, workers: int) -> int | None:
        """The claim is this run's node id: a node that joins again (fenced) gives back
        what its previous run held under that run's id."""
        key = await self._key(job_id)
        node = self.node_id
        async with self._transaction() as db:
            await db.execute(SQL.lock_job_workers, key)
            if await db.fetchval(SQL.job_workers_total, key) >= workers:
                return None
            return None if await db.fetchval(SQL.claim_job_worker, key, node) is None else node

    async def release_worker(self, job_id: str, claim: int) -> None:
        key = await self._key(job_id)
        async with self._transaction() as db:
            await db.execute(SQL.release_job_worker, key, claim)
            await db.execute(SQL.drop_empty_job_workers, key, claim)

    async def claim_hook(self, job_id: str) -> HookClaim:
        key = await self._key(job_id)
        async with self._transaction() as db:
            if await db.fetchval(SQL.claim_hook, key, self.node_id) is not None:
                return HookClaim.CLAIMED
            lost = await db.fetchval(SQL.hook_node, key) == -1
        return HookClaim.LOST if lost else HookClaim.ELSEWHERE

    async def leave(self) -> None:
        async with self._transaction() as db:
            await db.execute(SQL.free_node_workers, self.node_id)
            await db.execute(SQL.end_node, self.node_id, "stopped")

    async def listen_jobs(self, on_change: Callable[[str], None]) -> bool:
        if self._listener is not None and not self._listener.is_closed():
            return True
        try:
            self._listener = await asyncpg.connect(self.dsn)
            await self._listener.add_listener(
                JOBS_CHANNEL, lambda _conn, _pid, _channel, job_id: on_change(job_id)
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            if not self._listen_failed:
                log.warning("cannot listen for job changes; polling", extra={"error": str(exc)})
            self._listen_failed = True
            self._listener = None
            return False
        self._listen_failed = False
        return True

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await listener.close()
        await super().close()
