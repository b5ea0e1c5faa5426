"""A frozen picture of the scheduler's workers, for one metrics scrape or status read.

The scheduler sits above observe: it fills these records (``Scheduler.snapshot()``), and
their readers never see the scheduler itself."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WorkerSnapshot:
    job_id: str
    api_name: str
    slot: int
    pid: int
    state: str
    gpus: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SchedulerSnapshot:
    max_workers: int
    gpus: tuple[int, ...]
    # Jobs the scheduler holds (unfinished, or finished with workers still exiting), sorted.
    active_jobs: tuple[str, ...]
    # By job id, then slot.
    workers: tuple[WorkerSnapshot, ...]
