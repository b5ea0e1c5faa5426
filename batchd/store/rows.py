"""What every SQL backend shares: how a batch id packs its job's key and sequence number,
rows of the shared column lists turned into records, a job's chunks numbered for storage,
and a report of successes folded into runs. Dialect-free: no SQL and no driver here."""

from __future__ import annotations

import bisect
import itertools
import json
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

from batchd.constants import CHUNK_CACHE_JOBS, GRANT_MAX_BYTES
from batchd.store.chunks import Chunk, split_chunk
from batchd.store.records import (
    ApiRecord,
    BatchCounts,
    JobRecord,
    JobStatus,
    NewJob,
    Success,
)


class Row(Protocol):
    """A result row of either driver (a tuple, ``sqlite3.Row``, ``asyncpg.Record``)."""

    def __getitem__(self, index: int, /) -> Any: ...
    def __iter__(self) -> Iterator[Any]: ...


SEQ_BITS = 32
SEQ_MASK = (1 << SEQ_BITS) - 1


class UnknownJob(KeyError):
    pass


def batch_range(key: int) -> tuple[int, int]:
    """The first and last batch id a job's key can hold."""
    first = key << SEQ_BITS
    return first, first | SEQ_MASK


# How many columns ``{job_columns}`` has: the counts of a listing row follow them.
JOB_COLUMN_COUNT = 21


def job_record(row: Row) -> JobRecord:
    """A row of ``{job_columns}``."""
    paused, paused_at, paused_seconds = row[18], row[19], row[20]
    return JobRecord(
        job_id=row[0],
        api_name=row[1],
        api_version=row[2],
        kind=row[3],
        status=JobStatus(row[4]),
        workers=row[5],
        config=json.loads(row[6]),
        timeout=row[7],
        max_receive_count=row[8],
        priority=row[9],
        total_batch_count=row[10],
        created_at=row[11],
        end_time=row[12],
        # Bytes from PostgreSQL, whose text cannot hold every string (see its schema).
        error=row[13].decode() if isinstance(row[13], bytes) else row[13],
        has_on_complete=None if row[14] is None else bool(row[14]),
        retry_of=row[15],
        batch_timeout=row[16],
        pruned_at=row[17],
        paused=paused,
        paused_at=paused_at,
        paused_seconds=paused_seconds,
    )


def batch_counts(row: Row) -> BatchCounts:
    """A row of ``{count_columns}``."""
    queued, leased, succeeded, dead, failed, seconds = row
    average = seconds / succeeded if succeeded else None
    return BatchCounts(queued, leased, succeeded, dead, failed, average)


def api_record(row: Row) -> ApiRecord:
    return ApiRecord(
        name=row[0],
        version=row[1],
        spec=json.loads(row[2]),
        dotenv=json.loads(row[3]),
        created_at=row[4],
    )


def new_job_values(job: NewJob) -> tuple[Any, ...]:
    """The values of ``insert_job``, in its order."""
    return (
        job.job_id,
        job.api_name,
        job.api_version,
        job.kind,
        JobStatus.PENDING.value,
        job.workers,
        json.dumps(job.config),
        job.timeout,
        job.max_receive_count,
        job.priority,
        job.created_at,
        job.retry_of,
        job.batch_timeout,
    )


def within_grant_budget(payloads: list[bytes]) -> list[bytes]:
    """The first payloads of a grant that fit in GRANT_MAX_BYTES (one at least), so the
    frame to the worker stays far under its limit whatever the grant's length."""
    keep = bisect.bisect_right(list(itertools.accumulate(map(len, payloads))), GRANT_MAX_BYTES)
    if keep < len(payloads):
        del payloads[max(1, keep) :]
    return payloads


# Reads the (id, payloads) row of the chunk holding a batch id.
ChunkHolding = Callable[[int], Awaitable[Row]]


class ChunkCache:
    """Payloads of never-leased batches, from their job's chunks. The chunk being leased
    from stays split into payloads between leases (one per job, CHUNK_CACHE_JOBS jobs at most)."""

    def __init__(self) -> None:
        # Per job key: (batches before the chunk, its payloads).
        self._split: dict[int, tuple[int, list[bytes]]] = {}

    async def payloads(
        self, key: int, start: int, end: int, chunk_holding: ChunkHolding
    ) -> list[bytes]:
        """The payloads of batches start..end of the job whose key is `key`."""
        first, _ = batch_range(key)
        payloads: list[bytes] = []
        seq = start
        while seq <= end:
            cached = self._split.get(key)
            if cached is None or not cached[0] < seq <= cached[0] + len(cached[1]):
                row = await chunk_holding(first + seq - 1)
                cached = (row[0] - first, split_chunk(bytes(row[1])))
                self._split[key] = cached
                while len(self._split) > CHUNK_CACHE_JOBS:
                    self._split.pop(next(iter(self._split)))
            offset, split = cached
            upto = min(end, offset + len(split))
            payloads += split[seq - offset - 1 : upto - offset]
            seq = upto + 1
        return payloads


class NumberedChunks:
    """(id, payloads) rows of a job's chunks, counting the batches they hold on the way."""

    def __init__(self, first: int, chunks: Iterable[Chunk]) -> None:
        self._first = first
        self._chunks = chunks
        self.batches = 0

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        for chunk in self._chunks:
            yield self._first + self.batches, chunk.payloads
            self.batches += chunk.batches


# (mean duration, first id, last id, token) of a run of consecutive batches of one grant.
Run = tuple[float, int, int, int]


def success_runs(first: int, outcomes: Sequence[Success]) -> list[Run]:
    """(mean duration, first id, last id, token) per run of consecutive seqs and one token."""
    if not outcomes:
        return []
    # The usual report: one grant's batches in order. Told in C, without sorting.
    seqs = [o.seq for o in outcomes]
    head = outcomes[0]
    if seqs == list(range(head.seq, head.seq + len(seqs))) and all(
        o.token == head.token for o in outcomes
    ):
        mean = sum(o.duration for o in outcomes) / len(outcomes)
        return [(mean, first + head.seq, first + seqs[-1], head.token)]
    found: list[Run] = []
    ordered = sorted(outcomes, key=lambda o: (o.token, o.seq))
    start = 0
    for index in range(1, len(ordered) + 1):
        if (
            index < len(ordered)
            and ordered[index].token == ordered[start].token
            and ordered[index].seq == ordered[index - 1].seq + 1
        ):
            continue
        run = ordered[start:index]
        mean = sum(o.duration for o in run) / len(run)
        found.append((mean, first + run[0].seq, first + run[-1].seq, run[0].token))
        start = index
    return found
