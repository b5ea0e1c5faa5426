"""The queue as the rest of the daemon sees it: records and the Store interface.

SQLite is the embedded default (``sqlite.py``); a PostgreSQL store implementing the
same interface will let several boxes share one queue. Nothing outside ``store/``
writes SQL.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

from batchd.store.chunks import BatchChunks
from batchd.wire.ids import batch_id as batch_id
from batchd.wire.messages import Success as Success


class JobStatus(StrEnum):
    PENDING = "pending"
    ENQUEUING = "enqueuing"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    COMPLETED_WITH_FAILURES = "completed_with_failures"
    WORKER_ERROR = "worker_error"
    WORKER_OOM = "worker_oom"
    TIMED_OUT = "timed_out"
    STOPPED = "stopped"
    ENQUEUE_FAILED = "enqueue_failed"
    UNEXPECTED_ERROR = "unexpected_error"

    @property
    def terminal(self) -> bool:
        return self not in _ACTIVE_STATUSES


_ACTIVE_STATUSES = frozenset({JobStatus.PENDING, JobStatus.ENQUEUING, JobStatus.RUNNING})
TERMINAL_STATUSES = frozenset(s for s in JobStatus if s.terminal)


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


class Store(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def checkpoint(self) -> None: ...

    # APIs
    async def add_api_version(
        self, name: str, spec: dict[str, Any], dotenv: dict[str, str]
    ) -> ApiRecord: ...
    async def get_api(self, name: str, version: int | None = None) -> ApiRecord | None: ...
    async def list_apis(self) -> list[ApiRecord]: ...
    async def api_versions(self, name: str) -> list[ApiRecord]: ...
    async def delete_api(self, name: str) -> bool: ...

    # Jobs
    async def create_job(
        self, job: NewJob, batches: BatchChunks | Sequence[bytes]
    ) -> JobRecord: ...
    async def get_job(self, job_id: str) -> JobRecord | None: ...
    async def list_jobs(self, api_name: str, limit: int) -> list[JobRecord]: ...
    async def active_jobs(self) -> list[JobRecord]: ...
    async def set_status(
        self, job_id: str, status: JobStatus, error: str | None = None
    ) -> bool: ...
    async def set_has_on_complete(self, job_id: str, value: bool) -> None: ...
    async def counts(self, job_id: str) -> BatchCounts: ...
    async def metric_counts(self) -> MetricCounts: ...

    # Batches
    async def lease(self, job_id: str, limit: int, lease_timeout: float) -> list[Lease]: ...
    async def succeed(self, job_id: str, outcomes: Sequence[Success]) -> int: ...
    async def fail(
        self, job_id: str, failure: Failure, max_receive_count: int
    ) -> BatchState | None: ...
    async def release(self, job_id: str, leases: Sequence[tuple[int, int]]) -> int: ...
    async def renew(self, leases: Sequence[tuple[str, int, int]], lease_timeout: float) -> int: ...
    async def expire_leases(
        self, now: float, reason: str = ..., job_ids: Sequence[str] | None = None
    ) -> list[tuple[str, int, BatchState]]: ...
    def dead_letters(self, job_id: str) -> AsyncIterator[DeadLetter]: ...

    # Retention
    async def prunable_jobs(self, ended_before: float) -> list[JobRecord]: ...
    async def prune_job(self, job_id: str) -> int: ...
    async def reclaim_space(self, pages: int) -> int: ...
    def results(self, job_id: str) -> AsyncIterator[Result]: ...

    # Listing pages (the dashboard)
    async def list_jobs_page(
        self,
        api_names: Sequence[str],
        limit: int,
        before: str | None = None,
        active_only: bool = False,
    ) -> list[JobRecord]: ...
