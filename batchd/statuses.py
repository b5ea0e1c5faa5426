"""The job status vocabulary, defined once (standard library only).

The client, the store, metrics and the HTTP schema all read these sets from here; SQL
gets the active and terminal lists generated into its queries when they are loaded.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    COMPLETED_WITH_FAILURES = "completed_with_failures"
    WORKER_ERROR = "worker_error"
    WORKER_OOM = "worker_oom"
    TIMED_OUT = "timed_out"
    STOPPED = "stopped"
    # batchd's extension of Cortex's vocabulary: an unfinished job whose leasing is paused
    # (the job's own pause or its API's). Shown, never stored: the stored status stays
    # pending or running under a pause flag (see SHOWN_ONLY_STATUSES).
    PAUSED = "paused"
    # Cortex's vocabulary that batchd never sets (see CORTEX_ONLY_STATUSES).
    ENQUEUING = "enqueuing"
    ENQUEUE_FAILED = "enqueue_failed"
    UNEXPECTED_ERROR = "unexpected_error"

    @property
    def terminal(self) -> bool:
        return self not in _ACTIVE


# In this order: the jobs_active partial index of the SQLite schema lists them so, and a
# query's IN-list must be the same for SQLite to use that index.
ACTIVE_STATUSES: tuple[JobStatus, ...] = (JobStatus.PENDING, JobStatus.ENQUEUING, JobStatus.RUNNING)
# Shown to users, never stored: what a job's row holds is one of ACTIVE_STATUSES.
SHOWN_ONLY_STATUSES: frozenset[JobStatus] = frozenset({JobStatus.PAUSED})
_ACTIVE = frozenset(ACTIVE_STATUSES) | SHOWN_ONLY_STATUSES
TERMINAL_STATUSES: frozenset[JobStatus] = frozenset(s for s in JobStatus if s not in _ACTIVE)

# Statuses Cortex had and batchd never sets: a submission is split and stored in one
# transaction before its job exists (no `enqueuing`, no `enqueue_failed`), and the daemon's
# own failures are logged and retried, never pinned on a job (no `unexpected_error`). They
# stay in the enum as Cortex's vocabulary (a row holding one still reads), and are never
# offered as reachable: not in metrics' label set, not in the HTTP schema.
CORTEX_ONLY_STATUSES: frozenset[JobStatus] = frozenset(
    {JobStatus.ENQUEUING, JobStatus.ENQUEUE_FAILED, JobStatus.UNEXPECTED_ERROR}
)
# Every status a job can be seen in, in the order metrics and the HTTP schema list them.
REACHABLE_STATUSES: tuple[JobStatus, ...] = tuple(
    s for s in JobStatus if s not in CORTEX_ONLY_STATUSES
)
