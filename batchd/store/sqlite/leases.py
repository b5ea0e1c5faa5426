"""Giving never-leased batches their rows, and renewing and releasing leases, of the
``LeaseStore`` role (leasing and expiring: :class:`batchd.store.sqlroles.SqlLeases`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import aiosqlite

from batchd.store.rows import SEQ_BITS, batch_range, within_grant_budget
from batchd.store.sqlite.core import SqliteCore
from batchd.store.sqlite.queries import SQL
from batchd.store.sqlroles import SqlLeases


class SqliteLeases(SqliteCore, SqlLeases):
    async def _lease_fresh(
        self, db: aiosqlite.Connection, key: int, limit: int, token: int, lease_timeout: float
    ) -> list[tuple[int, int, bytes]]:
        """Give rows to (and lease) up to `limit` batches that have never been leased:
        the next ones of the job's chunks. Returns (id, attempts, payload) per batch."""
        found = await self._rows(db, SQL.materialized_batches, key)
        if not found or found[0][0] >= found[0][1]:
            return []
        done, total = found[0]
        start, end = done + 1, min(total, done + limit)
        first, _ = batch_range(key)

        async def chunk_holding(batch: int) -> Any:
            (row,) = await self._rows(db, SQL.chunk_holding, first, batch)
            return row

        payloads = await self._chunks.payloads(key, start, end, chunk_holding)
        payloads = within_grant_budget(payloads)
        end = start + len(payloads) - 1
        expires = time.time() + lease_timeout
        rows = [
            (first + seq, 1, payload)
            for seq, payload in zip(range(start, end + 1), payloads, strict=True)
        ]
        await self._exec_many(
            db, SQL.insert_leased_batch, [(row[0], token, expires, row[2]) for row in rows]
        )
        await self._exec(db, SQL.set_materialized, end, key)
        return rows

    async def release(self, job_id: str, leases: Sequence[tuple[int, int]]) -> int:
        """Give (seq, token) leases back without burning an attempt: never started."""
        key = await self._key(job_id)
        first, _ = batch_range(key)
        async with self._transaction() as db:
            released = await self._exec_many(
                db, SQL.release_lease, [(first + seq, token) for seq, token in leases]
            )
            if released:
                await self._count(db, key, queued=released, leased=-released)
        return released

    async def renew(self, leases: Sequence[tuple[str, int, int]], lease_timeout: float) -> int:
        """Push out the expiry of (job_id, seq, token) leases held by live workers."""
        expires = time.time() + lease_timeout
        rows = [
            (expires, (await self._key(job_id) << SEQ_BITS) + seq, token)
            for job_id, seq, token in leases
        ]
        async with self._transaction() as db:
            return await self._exec_many(db, SQL.renew_lease, rows)

    async def _insert_expiries(
        self, db: aiosqlite.Connection, rows: list[Any], reason: str
    ) -> None:
        await self._exec_many(
            db, SQL.insert_expiry, [(row[0], row[2], reason, time.time()) for row in rows]
        )
