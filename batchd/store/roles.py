"""The store's roles: what each part of the daemon asks of the queue.

:class:`Store` is their union; a backend implements every one, and code that needs a
single role can ask for just that role. The records they speak are in ``records``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from batchd.store.chunks import BatchChunks
    from batchd.store.records import (
        ApiRecord,
        BatchCounts,
        BatchState,
        DeadLetter,
        Expired,
        FailedBatch,
        Failure,
        HistoryBucket,
        HookClaim,
        JobRecord,
        JobStatus,
        Lease,
        ListedJob,
        MetricCounts,
        NewJob,
        Result,
        Success,
    )


class StoreLifecycle(Protocol):
    async def open(self) -> None:
        """Connect, and bring the schema up to this batchd's version."""

    async def close(self) -> None:
        """Finish the writes under way and disconnect."""

    async def ping(self) -> None:
        """Raise :class:`batchd.store.DatabaseUnavailable` when the queue's database
        cannot be reached now (a health check; a file on this box always can)."""


class ApiStore(Protocol):
    """Deployed API versions."""

    async def add_api_version(
        self, name: str, spec: dict[str, Any], dotenv: dict[str, str]
    ) -> ApiRecord: ...
    async def save_api_archive(self, name: str, digest: str, archive: bytes) -> None:
        """Keep the project archive whose snapshot has `digest`, before the version that
        names it is added: a version never exists without its archive. Where the backend
        keeps archives (PostgreSQL: a node that lacks a snapshot unpacks it from there);
        SQLite serves one box, whose snapshot folders are the copy, and keeps none."""

    async def api_archive(self, name: str, digest: str) -> bytes | None:
        """The archive saved for `digest`; None where the backend keeps none, or where there
        is none (deployed before archives were kept, or pruned with its API)."""

    async def get_api(self, name: str, version: int | None = None) -> ApiRecord | None:
        """The latest live version, or the given one (deleted or not)."""

    async def list_apis(self) -> list[ApiRecord]: ...
    async def api_versions(self, name: str) -> list[ApiRecord]: ...
    async def delete_api(self, name: str) -> bool: ...


class JobStore(Protocol):
    """Admission and status changes (a stop is a terminal status)."""

    async def create_job(self, job: NewJob, batches: BatchChunks | Sequence[bytes]) -> JobRecord:
        """The job and all its batches, queued, in one transaction."""

    async def set_status(self, job_id: str, status: JobStatus, error: str | None = None) -> bool:
        """Refused (False) once the job is terminal; a terminal status voids its leases."""

    async def set_has_on_complete(self, job_id: str, value: bool) -> None: ...


class LeaseStore(Protocol):
    """Batches out to workers: leased, renewed, given back, or expired."""

    async def lease(self, job_id: str, limit: int, lease_timeout: float) -> list[Lease]:
        """Up to `limit` queued batches of a running job, oldest first."""

    async def release(self, job_id: str, leases: Sequence[tuple[int, int]]) -> int:
        """(seq, token) leases back to the queue without burning an attempt."""

    async def renew(self, leases: Sequence[tuple[str, int, int]], lease_timeout: float) -> int:
        """Push out the expiry of (job_id, seq, token) leases."""

    async def expire_leases(
        self, now: float, reason: str = ..., job_ids: Sequence[str] | None = None
    ) -> list[tuple[str, int, BatchState]]:
        """Every lease past its expiry becomes a failed attempt: (job_id, seq, new state)."""


class OutcomeStore(Protocol):
    """What workers report; an outcome under a stale lease token changes nothing."""

    async def succeed(self, job_id: str, outcomes: Sequence[Success]) -> int:
        """The successes accepted, durable when this returns."""

    async def fail(
        self, job_id: str, failure: Failure, max_receive_count: int
    ) -> BatchState | None:
        """Re-queued, or dead out of attempts; None for a stale token."""


class PauseStore(Protocol):
    """Pausing leasing: a paused job's leased batches finish, and nothing more of it is
    leased until it is resumed (see :mod:`batchd.store.pauses`)."""

    async def pause_job(self, job_id: str, paused: bool) -> bool:
        """Set or clear the job's own pause; False: no unfinished job has the id."""

    async def pause_api(self, name: str, paused: bool) -> list[str]:
        """Pause or resume the API's unfinished jobs and the ones admitted until it is
        resumed; the ids of the unfinished ones."""

    async def paused_apis(self) -> list[str]: ...


class ReadStore(Protocol):
    """Jobs, their counts, pages of their results and dead letters, metric counts."""

    async def get_job(self, job_id: str) -> JobRecord | None: ...
    async def active_jobs(self) -> list[JobRecord]: ...
    async def list_jobs_page(
        self,
        api_names: Sequence[str],
        limit: int,
        before: str | None = None,
        active_only: bool = False,
        statuses: Sequence[str] | None = None,
    ) -> list[ListedJob]:
        """Newest first, with counts; `before` is the last job id of the previous page;
        `statuses` keeps the jobs of those statuses only."""

    async def counts(self, job_id: str) -> BatchCounts: ...
    async def metric_counts(self) -> MetricCounts: ...
    async def queue_depth(self) -> tuple[int, int]:
        """Batches of unfinished jobs queued and leased, over every API (one read of the
        unfinished jobs' counters: cheap enough for a status line once a second)."""

    def results(self, job_id: str) -> AsyncIterator[Result]: ...
    def dead_letters(self, job_id: str) -> AsyncIterator[DeadLetter]: ...
    async def job_history(self, job_id: str, bucket_seconds: int) -> list[HistoryBucket]:
        """The job's successes and failed attempts per bucket of `bucket_seconds`, oldest
        first, from the times the store keeps (cluster-wide on a shared database)."""

    async def failed_batches(
        self, api_names: Sequence[str], limit: int, before: int | None = None, contains: str = ""
    ) -> list[FailedBatch]:
        """Dead-lettered batches across jobs, newest job first; `before` is the last
        batch_key of the previous page; `contains` filters on the last error."""


class RetentionStore(Protocol):
    """Finished jobs pruned, and the files kept bounded."""

    async def prunable_jobs(self, ended_before: float) -> list[JobRecord]: ...
    async def prune_job(self, job_id: str) -> int:
        """Delete a finished job's batches; its row stays, marked pruned."""

    async def reclaim_space(self, pages: int) -> int:
        """Give up to `pages` free pages back; the number still free."""

    async def checkpoint(self) -> None:
        """Bound the write-ahead log."""


class NodeStore(Protocol):
    """This daemon among the nodes sharing the queue. On a queue no other daemon can
    open (SQLite) it is the only node: its claims are always granted and nobody sweeps."""

    # Whether other daemons may share this queue (and must be looked for and synced with).
    shared: bool

    async def join(
        self, name: str, instance: str, capacity: tuple[int, int], node_timeout: float, reason: str
    ) -> Expired:
        """Register this daemon as node `name` on `instance` (its machine and state
        directory) with `capacity` (max_workers, GPUs); the leases a previous run of this
        node held are expired with `reason` (on a queue of its own: every lease). Raises
        NodeNameTaken when a node of that name elsewhere was heard from within
        `node_timeout`."""

    async def heartbeat(self) -> bool:
        """Say this node is alive; False when another node found it silent and ended it
        (its leases and slots are gone: it is fenced until it joins again)."""

    async def sweep_lost(self, node_timeout: float) -> tuple[list[str], Expired]:
        """End the nodes silent past `node_timeout`: their leases expire (failed
        attempts), their worker slots free. Safe with several sweepers at once: each
        lost node is swept once. (Names of the nodes swept, leases expired.)"""

    async def claim_worker(self, job_id: str, workers: int) -> int | None:
        """One of the job's `workers` slots, counted over every node, for this node: the
        claim to give back with release_worker, or None when they are all taken."""

    async def release_worker(self, job_id: str, claim: int) -> None: ...
    async def claim_hook(self, job_id: str) -> HookClaim:
        """Whether this node runs the job's on_job_complete (once per job)."""

    async def leave(self) -> None:
        """This node stops: its slots free (its leases were given back already)."""

    async def listen_jobs(self, on_change: Callable[[str], None]) -> bool:
        """Have `on_change(job_id)` called when any node admits a job or changes its
        status; True while listening (call again after False: the connection was lost)."""


class Store(
    NodeStore,
    StoreLifecycle,
    ApiStore,
    JobStore,
    LeaseStore,
    OutcomeStore,
    PauseStore,
    ReadStore,
    RetentionStore,
    Protocol,
):
    """The whole queue: every role. Code that needs one role should ask for that role."""
