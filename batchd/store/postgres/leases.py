"""Giving never-leased batches their rows, and renewing and releasing leases, of the
``LeaseStore`` role (leasing and expiring: :class:`batchd.store.sqlroles.SqlLeases`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import asyncpg

from batchd.store.postgres.core import PostgresCore
from batchd.store.postgres.queries import SQL
from batchd.store.rows import SEQ_BITS, batch_range, within_grant_budget
from batchd.store.sqlroles import SqlLeases


class PostgresLeases(PostgresCore, SqlLeases):
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

    async def _insert_expiries(self, db: asyncpg.Connection, rows: list[Any], reason: str) -> None:
        """One statement over arrays, in id order; the reason as bytes, as errors are."""
        rows.sort(key=lambda row: row[0])
        await db.execute(
            SQL.insert_expiries,
            [row[0] for row in rows],
            [row[2] for row in rows],
            reason.encode(),
            time.time(),
        )
