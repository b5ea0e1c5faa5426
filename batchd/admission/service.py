"""The job service: submit a job, retry a job's dead letters, stop a job, delete an API.

Callers pass what the request said (an API, a body, a job id) and get records back; every
refusal is a domain error (:mod:`batchd.errors`). The HTTP routes call this and only render
what it returns.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Protocol

from batchd.admission.job_body import JobSubmission, parse_submission
from batchd.admission.planning import plan_batches
from batchd.config import DaemonConfig
from batchd.errors import Conflict, Gone, Invalid, NotFound
from batchd.observe.metrics import Metrics
from batchd.scheduler.core import Scheduler
from batchd.store import views
from batchd.store.chunks import BatchChunks
from batchd.store.records import ApiRecord, JobRecord, NewJob, new_job_id
from batchd.store.roles import Store

# What a retry keeps of the job it retries; the API version is the latest one.
_RETRY_KEEPS = (
    "kind",
    "workers",
    "config",
    "timeout",
    "batch_timeout",
    "max_receive_count",
    "priority",
)


class Apis(Protocol):
    """What admission needs of the deployed APIs (``batchd.apis.registry.ApiRegistry``):
    a protocol, so admission and apis stay side by side, neither importing the other."""

    async def require(self, name: str) -> ApiRecord:
        """The latest version of API `name`; NotFound when it is not deployed."""
        ...

    async def delete(self, name: str) -> None: ...


@dataclass(frozen=True)
class DryRun:
    """What a submission would make, had it not been a dry run."""

    api_name: str
    total_batch_count: int
    item_count: int
    # The files read, for delimited_files and file_path_lister.
    matched_files: list[str] | None


@dataclass(frozen=True)
class Admission:
    """The daemon's one job service, over its store, registry, scheduler and metrics."""

    config: DaemonConfig
    store: Store
    registry: Apis
    scheduler: Scheduler
    metrics: Metrics

    def require_gpus(self, api: ApiRecord) -> None:
        """Invalid unless this machine has the GPUs one worker of `api` needs."""
        needed = int(api.spec["compute"].get("gpu", 0))
        available = len(self.scheduler.gpus)
        if needed > available:
            raise Invalid(
                f"API {api.name} needs {needed} GPU(s) per worker; this machine has {available}",
                "compute.gpu",
            )

    async def submit(
        self, api: ApiRecord, body: bytes, *, dry_run: bool = False, started: float | None = None
    ) -> JobRecord | DryRun:
        """Parse and split the job body, then store the job and let the scheduler run it.

        `started` is the time.perf_counter() the request arrived at, for the admission
        histogram (now when not given)."""
        started = time.perf_counter() if started is None else started
        self.require_gpus(api)
        config = self.config
        # Parsing and splitting a large job is CPU work: keep the event loop answering.
        submission = await asyncio.to_thread(parse_submission, body, config.max_json_depth)
        plan = await asyncio.to_thread(
            plan_batches,
            submission,
            config.input_root_paths,
            config.max_item_size,
            max_batch_bytes=config.max_batch_size,
            max_batches=config.max_batches_per_job,
            # A file source's chunks wait on disk, next to the database, until stored.
            spool_dir=config.state_path,
            keep_payloads=not dry_run,
            s3=config.s3,
        )
        try:
            if dry_run:
                return DryRun(api.name, plan.batches.count, plan.item_count, plan.matched_files)
            job = self._new_job(api, submission)
            return await self._start(job, plan.batches, started)
        finally:
            plan.close()

    def _new_job(self, api: ApiRecord, submission: JobSubmission) -> NewJob:
        return NewJob(
            job_id=new_job_id(),
            api_name=api.name,
            api_version=api.version,
            kind=submission.source_kind,
            workers=submission.workers,
            config=submission.config,
            timeout=submission.timeout,
            batch_timeout=(
                submission.batch_timeout
                or api.spec["handler"].get("batch_timeout")
                or self.config.batch_timeout
            ),
            max_receive_count=submission.max_receive_count_value(),
            priority=submission.priority,
            created_at=time.time(),
        )

    async def retry(self, api_name: str, job_id: str, started: float | None = None) -> JobRecord:
        """A new job made of the dead-lettered batches of `job_id`, on the API's latest
        version."""
        started = time.perf_counter() if started is None else started
        original = await self.find_job(api_name, job_id, unpruned=True)
        api = await self.registry.require(original.api_name)
        payloads = [dead.payload async for dead in self.store.dead_letters(original.job_id)]
        if not payloads:
            raise Conflict(f"job {original.job_id} has no dead-lettered batches", "jobID")
        self.require_gpus(api)
        job = NewJob(
            job_id=new_job_id(),
            api_name=api.name,
            api_version=api.version,
            created_at=time.time(),
            retry_of=original.job_id,
            **{name: getattr(original, name) for name in _RETRY_KEEPS},
        )
        return await self._start(job, payloads, started)

    async def _start(
        self, job: NewJob, batches: BatchChunks | list[bytes], started: float
    ) -> JobRecord:
        """Store the job with all its batches (one transaction), then let the scheduler run
        it."""
        record = await self.store.create_job(job, batches)
        self.scheduler.admit(record)
        self.metrics.admitted(record.api_name, started)
        return record

    async def stop(self, api_name: str, job_id: str) -> JobRecord:
        """Stop a running job; Conflict when it has already ended."""
        job = await self.find_job(api_name, job_id)
        await self.scheduler.stop_job(job.job_id)
        return job

    async def delete_api(self, name: str) -> list[str]:
        """Stop the API's running jobs, then delete it; the ids of the jobs stopped."""
        await self.registry.require(name)
        stopped = await self.scheduler.stop_api_jobs(name)
        await self.registry.delete(name)
        return stopped

    async def find_job(self, api_name: str, job_id: str, *, unpruned: bool = False) -> JobRecord:
        """The job `job_id` of API `api_name`; with `unpruned`, Gone when its batches,
        results and log were pruned."""
        job = await self.store.get_job(job_id)
        if job is None or job.api_name != api_name:
            raise NotFound(f"job {job_id} not found for API {api_name}", "jobID")
        if unpruned and job.pruned_at is not None:
            raise Gone(
                f"the batches of job {job.job_id} were pruned on {views.iso_time(job.pruned_at)} "
                "(retention_days)",
                "jobID",
            )
        return job
