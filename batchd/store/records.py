"""The queue as the rest of the daemon sees it: records and the Store interface.

``Store`` is the union of the role protocols in ``roles.py``. SQLite is the embedded
default (``sqlite/``); a PostgreSQL store implementing the same roles will let several
boxes share one queue. Nothing outside ``store/`` writes SQL.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

# Every package imports the status enum with the records, from here.
from batchd.statuses import JobStatus as JobStatus
from batchd.wire.ids import batch_id as batch_id
from batchd.wire.messages import Success as Success


class BatchState(StrEnum):
    QUEUED = "queued"
    LEASED = "leased"
    SUCCEEDED = "succeeded"
    DEAD = "dead"


_last_id_micros = 0


def new_job_id() -> str:
    """Time-ordered, so sorting ids sorts jobs by age (as Cortex did).

    Microseconds, forced to increase within this process; the random tail keeps ids
    from different daemons sharing one queue apart."""
    global _last_id_micros
    _last_id_micros = max(time.time_ns() // 1000, _last_id_micros + 1)
    return f"{_last_id_micros:013x}{secrets.token_hex(2)}"


@dataclass(frozen=True)
class ApiRecord:
    name: str
    version: int
    spec: dict[str, Any]
    dotenv: dict[str, str]
    created_at: float


@dataclass(frozen=True)
class NewJob:
    job_id: str
    api_name: str
    api_version: int
    kind: str
    workers: int
    config: dict[str, Any]
    timeout: float | None
    max_receive_count: int
    priority: int
    created_at: float
    batch_timeout: float | None = None
    retry_of: str | None = None


# One encoder, made once: json.dumps with options builds a new one per call.
_PAYLOAD_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode_payload(value: Any) -> bytes:
    """A batch payload as stored: compact JSON, UTF-8, as the submission encoded it."""
    return _PAYLOAD_ENCODER.encode(value).encode()


# A job's pause flags: paused itself, or by its API (both may hold).
PAUSED_BY_JOB = 1
PAUSED_BY_API = 2


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    api_name: str
    api_version: int
    kind: str
    status: JobStatus
    workers: int
    config: dict[str, Any]
    timeout: float | None
    max_receive_count: int
    priority: int
    total_batch_count: int
    created_at: float
    end_time: float | None
    error: str | None
    has_on_complete: bool | None
    retry_of: str | None
    batch_timeout: float | None
    pruned_at: float | None = None
    # Who paused it (PAUSED_BY_JOB, PAUSED_BY_API flags; 0: not paused), since when,
    # and for how long before: its timeout does not run while it is paused.
    paused: int = 0
    paused_at: float | None = None
    paused_seconds: float = 0.0

    @property
    def shown_status(self) -> JobStatus:
        """The status users see: `paused` while an unfinished job is paused."""
        if self.paused and not self.status.terminal:
            return JobStatus.PAUSED
        return self.status

    def deadline(self) -> float | None:
        """When the job times out (wall clock), the time it spent paused not counted;
        None without a timeout. While paused, it moves on with the clock."""
        if self.timeout is None:
            return None
        paused = self.paused_seconds
        if self.paused_at is not None:
            paused += max(0.0, time.time() - self.paused_at)
        return self.created_at + self.timeout + paused


@dataclass(frozen=True)
class BatchCounts:
    queued: int
    leased: int
    succeeded: int
    dead: int
    failed_attempts: int
    average_time: float | None

    @property
    def unfinished(self) -> int:
        return self.queued + self.leased


# Leases and successes (Success: a worker's report, read once, as stored) come and go by
# the thousand per second: named tuples, which are several times cheaper to make than
# frozen dataclasses.
class Lease(NamedTuple):
    job_id: str
    seq: int
    token: int
    attempt: int
    payload: bytes


@dataclass(frozen=True)
class Failure:
    seq: int
    token: int
    error: str
    traceback: str | None


@dataclass(frozen=True)
class DeadLetter:
    seq: int
    payload: bytes
    attempts: int
    error: str | None
    traceback: str | None


@dataclass(frozen=True)
class Result:
    seq: int
    result: bytes


@dataclass(frozen=True)
class MetricCounts:
    """What GET /metrics reads from the store: jobs by status, and the queued and leased
    batches of unfinished jobs by API."""

    jobs_by_status: dict[str, int]
    queued_by_api: dict[str, int]
    leased_by_api: dict[str, int]


class ListedJob(NamedTuple):
    """A job of a listing page, with its counts read in the same statement."""

    job: JobRecord
    counts: BatchCounts


class HookClaim(StrEnum):
    """Who runs a job's on_job_complete, across the nodes sharing the queue."""

    # This node: it runs it.
    CLAIMED = "claimed"
    # Another node runs it, or ran it.
    ELSEWHERE = "elsewhere"
    # The node that ran it was lost: it is not run again, and the job ends.
    LOST = "lost"


# Expired leases, as (job id, seq, the batch's new state).
Expired = list[tuple[str, int, BatchState]]


@dataclass(frozen=True)
class FailedBatch:
    """A dead-lettered batch in the listing across jobs, with its last attempt's error."""

    batch_key: int  # the batch's id in the store: a page's cursor
    api_name: str
    job_id: str
    seq: int
    attempts: int
    error: str | None
    traceback: str | None
    failed_at: float | None


# (bucket start, Unix seconds; batches succeeded; failed attempts) of a job's history.
HistoryBucket = tuple[int, int, int]
