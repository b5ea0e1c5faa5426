"""Leasing batches to workers, and renewing, releasing and expiring the leases (the
``LeaseStore`` role)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from typing import Any

import asyncpg

from batchd.store.postgres.core import PostgresCore
from batchd.store.postgres.queries import SQL
from batchd.store.records import BatchState, Lease
from batchd.store.rows import SEQ_BITS, SEQ_MASK, ChunkCache, batch_range, within_grant_budget


class PostgresLeases(PostgresCore):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._chunks = ChunkCache()

    async def lease(self, job_id: str, limit: int, lease_timeout: float) -> list[Lease]:
        """Re-queued rows first (skipping rows another transaction is leasing), then
        fresh ones from the chunks."""
        key = await self._key(job_id)
        first, last = batch_range(key)
        token = secrets.randbits(62)
        async with self._transaction() as db:
            rows: list[Any] = await db.fetch(
                SQL.lease_queued, token, time.time() + lease_timeout, first, last, limit, key
            )
            if len(rows) < limit:
                rows += await self._lease_fresh(db, key, limit - len(rows), token, lease_timeout)
            if rows:
                await self._count(db, key, queued=-len(rows), leased=len(rows))
        leases = [Lease(job_id, row[0] & SEQ_MASK, token, row[1], row[2]) for row in rows]
        leases.sort(key=lambda lease: lease.seq)
        return leases

    async def _lease_fresh(
        self, db: asyncpg.Connection, key: int, limit: int, token: int, lease_timeout: float
    ) -> list[tuple[int, int, bytes]]:
        """Rows for the next never-leased batches, leased: (id, attempts, payload) each."""
        found = await db.fetchrow(SQL.materialized_batches, key)
        if found is None or found[0] >= found[1]:
            return []
        done, total = found
        start, end = done + 1, min(total, done + limit)
        first, _ = batch_range(key)

        async def chunk_holding(batch: int) -> asyncpg.Record:
            row = await db.fetchrow(SQL.chunk_holding, first, batch)
            assert row is not None, f"no chunk holds batch {batch}"
            return row

        payloads = within_grant_budget(await self._chunks.payloads(key, start, end, chunk_holding))
        end = start + len(payloads) - 1
        await db.execute(
            SQL.insert_leased_batches, first + start, token, time.time() + lease_timeout, payloads
        )
        await db.execute(SQL.set_materialized, end, key)
        return [(first + seq, 1, payload) for seq, payload in enumerate(payloads, start)]

    async def release(self, job_id: str, leases: Sequence[tuple[int, int]]) -> int:
        """One statement over arrays of ids and tokens; its count is the leases released."""
        key = await self._key(job_id)
        first, _ = batch_range(key)
        ids = [first + seq for seq, _ in leases]
        tokens = [token for _, token in leases]
        async with self._transaction() as db:
            released = await self._exec(db, SQL.release_leases, ids, tokens)
            if released:
                await self._count(db, key, queued=released, leased=-released)
        return released

    async def renew(self, leases: Sequence[tuple[str, int, int]], lease_timeout: float) -> int:
        """One statement over arrays of ids and tokens, whatever their jobs."""
        expires = time.time() + lease_timeout
        ids = [(await self._key(job_id) << SEQ_BITS) + seq for job_id, seq, _ in leases]
        tokens = [token for _, _, token in leases]
        async with self._transaction() as db:
            return await self._exec(db, SQL.renew_leases, expires, ids, tokens)

    async def expire_leases(
        self,
        now: float,
        reason: str = "lease expired: the worker holding it was lost",
        job_ids: Sequence[str] | None = None,
    ) -> list[tuple[str, int, BatchState]]:
        """As the SQLite store: found through each unfinished job's id range."""
        wanted = None if job_ids is None else set(job_ids)
        expired: list[tuple[str, int, BatchState]] = []
        async with self._transaction() as db:
            for key, job_id, max_receive_count in await db.fetch(SQL.jobs_holding_leases):
                if wanted is not None and job_id not in wanted:
                    continue
                first, last = batch_range(key)
                rows = await db.fetch(SQL.expire_job_leases, max_receive_count, first, last, now)
                if not rows:
                    continue
                rows.sort(key=lambda row: row[0])
                await db.execute(
                    SQL.insert_expiries,
                    [row[0] for row in rows],
                    [row[2] for row in rows],
                    reason.encode(),
                    time.time(),
                )
                dead = sum(row[1] == BatchState.DEAD for row in rows)
                await self._count(
                    db,
                    key,
                    leased=-len(rows),
                    queued=len(rows) - dead,
                    dead=dead,
                    failures=len(rows),
                )
                expired += [(job_id, row[0] & SEQ_MASK, BatchState(row[1])) for row in rows]
        return expired
