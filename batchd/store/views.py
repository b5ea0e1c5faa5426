"""How jobs look to users: one rendering shared by HTTP, the CLI and on_job_complete."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from batchd.store.records import BatchCounts, JobRecord


def iso_time(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def job_spec(job: JobRecord) -> dict[str, Any]:
    """What `POST /batch/<api>` answers and what `__init__` receives as job_spec."""
    spec: dict[str, Any] = {
        "job_id": job.job_id,
        "api_name": job.api_name,
        "api_version": job.api_version,
        "kind": "BatchAPI",
        "source": job.kind,
        "workers": job.workers,
        "config": job.config,
        "timeout": job.timeout,
        "batch_timeout": job.batch_timeout,
        "max_receive_count": job.max_receive_count,
        "priority": job.priority,
        "total_batch_count": job.total_batch_count,
        "start_time": iso_time(job.created_at),
    }
    if job.retry_of is not None:
        spec["retry_of"] = job.retry_of
    return spec


def job_status(
    job: JobRecord,
    counts: BatchCounts,
    worker_counts: dict[str, int],
    workers: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    status = job_spec(job)
    status.update(
        status=str(job.shown_status),
        end_time=iso_time(job.end_time),
        batches_in_queue=counts.queued,
        batch_metrics={
            "succeeded": counts.succeeded,
            "failed": counts.dead,
            "in_progress": counts.leased,
            "failed_attempts": counts.failed_attempts,
            "average_time_per_batch": counts.average_time,
        },
        worker_counts=worker_counts,
        worker_details=workers or [],
    )
    if job.error is not None:
        status["error"] = job.error
    return status


def empty_worker_counts() -> dict[str, int]:
    return dict.fromkeys(
        ("pending", "initializing", "running", "succeeded", "failed", "stalled"), 0
    )
