"""Batch ids (standard library only: workers import it)."""

from __future__ import annotations


def batch_id(job_id: str, seq: int) -> str:
    """The id a handler, the job's log and the results know batch `seq` of a job by."""
    return f"{job_id}-{seq}"
