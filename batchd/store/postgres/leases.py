"""Leasing batches to workers, and renewing, releasing and expiring the leases (the
``LeaseStore`` role)."""

from __future__ import annotations

import bisect
import itertools
import json
import secrets
import time
from collections.abc import Sequence
from typing import Any

import asyncpg

from batchd.constants import CHUNK_CACHE_JOBS, GRANT_MAX_BYTES
from batchd.store.postgres.core import PostgresCore
from batchd.store.postgres.queries import pick
from batchd.store.records import BatchState, Lease, encode_payload
from batchd.store.rows import SEQ_BITS, SEQ_MASK, batch_range

(
    _LEASE_QUEUED,
    _MATERIALIZED,
    _CHUNK_HOLDING,
    _INSERT_LEASED,
    _SET_MATERIALIZED,
    _RELEASE,
    _RENEW,
    _JOBS_HOLDING_LEASES,
    _EXPIRE,
    _INSERT_EXPIRIES,
) = pick(
    "lease_queued",
    "materialized_batches",
    "chunk_holding",
    "insert_leased_batches",
    "set_materialized",
    "release_leases",
    "renew_leases",
    "jobs_holding_leases",
    "expire_job_leases",
    "insert_expiries",
)


class PostgresLeases(PostgresCore):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Per job key: the index of the chunk last leased from, decoded.
        self._chunk_cache: dict[int, tuple[int, list[Any]]] = {}

    async def lease(self, job_id: str, limit: int, lease_timeout: float) -> list[Lease]:
        """Lease up to `limit` queued batches of a running job, oldest first."""
        key = await self._key(job_id)
        first, last = batch_range(key)
        token = secrets.randbits(62)
        async with self._transaction() as db:
            rows: list[Any] = await db.fetch(
                _LEASE_QUEUED, token, time.time() + lease_timeout, first, last, limit, key
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
        """Give rows to (and lease) up to `limit` batches that have never been leased:
        the next ones of the job's chunks. Returns (id, attempts, payload) per batch."""
        found = await db.fetchrow(_MATERIALIZED, key)
        if found is None or found[0] >= found[1]:
            return []
        done, total = found
        start, end = done + 1, min(total, done + limit)
        first, _ = batch_range(key)
        payloads = await self._payloads(db, key, start, end)
        # A grant of big payloads stops at GRANT_MAX_BYTES (one batch at least): the frame
        # to the worker stays far under its limit whatever the grant's length.
        keep = bisect.bisect_right(list(itertools.accumulate(map(len, payloads))), GRANT_MAX_BYTES)
        if keep < len(payloads):
            del payloads[max(1, keep) :]
            end = start + len(payloads) - 1
        await db.execute(
            _INSERT_LEASED, first + start, token, time.time() + lease_timeout, payloads
        )
        await db.execute(_SET_MATERIALIZED, end, key)
        return [(first + seq, 1, payload) for seq, payload in enumerate(payloads, start)]

    async def _payloads(
        self, db: asyncpg.Connection, key: int, start: int, end: int
    ) -> list[bytes]:
        """The payloads of batches start..end, from the job's chunks. The chunk being
        leased from stays decoded between leases (one per job, a few at most)."""
        first, _ = batch_range(key)
        payloads: list[bytes] = []
        seq = start
        while seq <= end:
            cached = self._chunk_cache.get(key)
            if cached is None or not cached[0] < seq <= cached[0] + len(cached[1]):
                row = await db.fetchrow(_CHUNK_HOLDING, first, first + seq - 1)
                assert row is not None, f"no chunk holds batch {seq} of job key {key}"
                cached = (row[0] - first, json.loads(row[1]))
                self._chunk_cache[key] = cached
                while len(self._chunk_cache) > CHUNK_CACHE_JOBS:
                    self._chunk_cache.pop(next(iter(self._chunk_cache)))
            offset, decoded = cached
            upto = min(end, offset + len(decoded))
            payloads += map(encode_payload, decoded[seq - offset - 1 : upto - offset])
            seq = upto + 1
        return payloads

    async def release(self, job_id: str, leases: Sequence[tuple[int, int]]) -> int:
        """Give (seq, token) leases back without burning an attempt: never started."""
        key = await self._key(job_id)
        first, _ = batch_range(key)
        ids = [first + seq for seq, _ in leases]
        tokens = [token for _, token in leases]
        async with self._transaction() as db:
            released = await self._exec(db, _RELEASE, ids, tokens)
            if released:
                await self._count(db, key, queued=released, leased=-released)
        return released

    async def renew(self, leases: Sequence[tuple[str, int, int]], lease_timeout: float) -> int:
        """Push out the expiry of (job_id, seq, token) leases held by live workers."""
        expires = time.time() + lease_timeout
        ids = [(await self._key(job_id) << SEQ_BITS) + seq for job_id, seq, _ in leases]
        tokens = [token for _, _, token in leases]
        async with self._transaction() as db:
            return await self._exec(db, _RENEW, expires, ids, tokens)

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
            for key, job_id, max_receive_count in await db.fetch(_JOBS_HOLDING_LEASES):
                if wanted is not None and job_id not in wanted:
                    continue
                first, last = batch_range(key)
                rows = await db.fetch(_EXPIRE, max_receive_count, first, last, now)
                if not rows:
                    continue
                rows.sort(key=lambda row: row[0])
                await db.execute(
                    _INSERT_EXPIRIES,
                    [row[0] for row in rows],
                    [row[2] for row in rows],
                    reason,
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
