"""Leasing batches to workers, and renewing, releasing and expiring the leases (the
``LeaseStore`` role)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from typing import Any

import aiosqlite

from batchd.store.records import BatchState, Lease
from batchd.store.rows import SEQ_BITS, SEQ_MASK, ChunkCache, batch_range, within_grant_budget
from batchd.store.sqlite.core import SqliteCore
from batchd.store.sqlite.queries import SQL


class SqliteLeases(SqliteCore):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._chunks = ChunkCache()

    async def lease(self, job_id: str, limit: int, lease_timeout: float) -> list[Lease]:
        """Lease up to `limit` queued batches of a running job, oldest first."""
        key = await self._key(job_id)
        first, last = batch_range(key)
        token = secrets.randbits(62)
        async with self._transaction() as db:
            async with db.execute(
                SQL.lease_queued, (token, time.time() + lease_timeout, first, last, limit, key)
            ) as cursor:
                rows: list[Any] = list(await cursor.fetchall())
            if len(rows) < limit:
                rows += await self._lease_fresh(db, key, limit - len(rows), token, lease_timeout)
            if rows:
                await self._count(db, key, queued=-len(rows), leased=len(rows))
        leases = [Lease(job_id, row[0] & SEQ_MASK, token, row[1], row[2]) for row in rows]
        leases.sort(key=lambda lease: lease.seq)
        return leases

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

    async def expire_leases(
        self,
        now: float,
        reason: str = "lease expired: the worker holding it was lost",
        job_ids: Sequence[str] | None = None,
    ) -> list[tuple[str, int, BatchState]]:
        """Every lease past its expiry counts as a failed attempt (its worker is gone).

        Only unfinished jobs hold leases (a job's end gives its leases back); `job_ids`
        narrows the search further. Leased batches are found by each job's id range, not
        an index, so the usual path of a batch touches no index."""
        wanted = None if job_ids is None else set(job_ids)
        expired: list[tuple[str, int, BatchState]] = []
        async with self._transaction() as db:
            active = await self._rows(db, SQL.jobs_holding_leases)
            for key, job_id, max_receive_count in active:
                if wanted is not None and job_id not in wanted:
                    continue
                first, last = batch_range(key)
                async with db.execute(
                    SQL.expire_job_leases, (max_receive_count, first, last, now)
                ) as cursor:
                    rows = list(await cursor.fetchall())
                if not rows:
                    continue
                await self._exec_many(
                    db, SQL.insert_expiry, [(row[0], row[2], reason, time.time()) for row in rows]
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
