"""Pydantic models of every HTTP response body: the source of ``GET /openapi.json``.

Request bodies are described by the models the routes validate with (the job body is
:class:`batchd.admission.job_body.JobSubmission`). The small responses are built through these
models by their routes; the job documents come from :mod:`batchd.store.views` (shared with the
CLI and ``on_job_complete``) and are held to these models by the tests and by schemathesis.

Response models forbid extra keys, so a field added to a response but not here makes the
response disagree with the published description, which the tests catch.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from batchd.admission.job_body import SourceKind
from batchd.pool.exits import ExitCause
from batchd.pool.process import WorkerState
from batchd.statuses import REACHABLE_STATUSES
from batchd.store.records import JobStatus


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def body(self) -> dict[str, Any]:
        """The JSON body: fields left unset (optional keys such as ``retry_of``) are omitted."""
        return self.model_dump(mode="json", exclude_unset=True)


# --- errors and small answers --------------------------------------------------------------


class ErrorDetail(_Response):
    message: str = Field(description="what is wrong, for people")
    field: str | None = Field(
        default=None,
        description="the offending body field or query parameter, such as `item_list.batch_size` "
        "or `jobID`; absent when the error is not about one field",
    )


class Error(_Response):
    """Every error response (4xx and 5xx) has this shape."""

    error: ErrorDetail


class Health(_Response):
    status: Literal["ok"]


class Message(_Response):
    message: str


class DeletedApi(_Response):
    message: str
    stopped_jobs: list[str] = Field(description="ids of the running jobs the deletion stopped")


# --- the daemon -----------------------------------------------------------------------------


class DiskUsage(_Response):
    """Bytes used under the state directory, by part."""

    database: int
    logs: int
    apis: int
    other: int
    total: int


class WorkerDetail(_Response):
    slot: int
    pid: int
    state: WorkerState
    gpus: list[int]


class DaemonWorker(WorkerDetail):
    job_id: str


class StatusPage(_Response):
    version: str
    state_dir: str
    disk_usage: DiskUsage
    max_workers: int
    gpus: list[int]
    active_jobs: list[str]
    workers: list[DaemonWorker]


class LiveWorker(_Response):
    api_name: str
    job_id: str
    slot: int
    pid: int
    state: WorkerState
    gpus: list[int]
    batch_id: str | None = Field(description="the batch it is working on; None between batches")
    started_at: str = Field(description="when it took its job, ISO 8601 UTC")
    rss_bytes: int | None = Field(description="resident memory, from /proc; None once it is gone")
    cpu_percent: float | None = Field(
        description="CPU use since the previous read (at most one a second), in % of one core"
    )
    gpu_memory_bytes: int | None = Field(
        description="GPU memory held by it and the processes it started (nvidia-smi); None "
        "where nvidia-smi is not on PATH or failed"
    )


class WorkerExit(_Response):
    time: str = Field(description="ISO 8601 UTC with milliseconds")
    api_name: str
    job_id: str
    slot: int
    pid: int
    cause: ExitCause
    exit_code: int | None = Field(description="None when a signal ended it")
    signal: str | None = Field(description="the signal that ended it, e.g. SIGKILL")
    reason: str
    restart_in: float | None = Field(
        description="seconds until a replacement starts after this death (the crash "
        "back-off); None when none is started for it"
    )


class WorkersPage(_Response):
    workers: list[LiveWorker] = Field(description="live workers, by job id then slot")
    # Kept in memory: a restart of the daemon forgets them.
    events: list[WorkerExit] = Field(description="the last 500 worker exits, newest first")


class PruneReport(_Response):
    dry_run: bool
    retention_days: float
    jobs: list[str] = Field(description="ids of the pruned jobs (would-be, with dryRun)")
    rows_deleted: int
    log_bytes: int


# --- APIs -----------------------------------------------------------------------------------


class HandlerSummary(_Response):
    type: str = "python"
    path: str | None = Field(description="None: a model API's built-in handler")
    batch_timeout: float | None = None
    config: dict[str, Any]
    python: str | None = None
    env: list[str] = Field(description="names of the variables set by `[handler] env`; no values")


class ComputeSummary(_Response):
    gpu: int
    mem: str | None = None
    disk: str | None = None


class RetentionSummary(_Response):
    days: float | None = None


class ApiSummary(_Response):
    name: str
    version: int
    created_at: str = Field(description="ISO 8601 UTC with milliseconds")
    endpoint: str = Field(description="the path jobs are submitted to, `/batch/<name>`")
    handler: HandlerSummary
    compute: ComputeSummary
    retention: RetentionSummary | None = None
    files: int | None = None
    size: int | None = Field(default=None, description="bytes of the project snapshot")


class Deployed(ApiSummary):
    unchanged: bool = Field(
        description="true when the upload was the same as the latest version, which stays latest"
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="what the deploy accepted but does not honour, such as a cortex.yaml key "
        "with no meaning on one machine (`compute.cpu is ignored: ...`) or requirements not "
        "installed because [handler] python is set; empty when none",
    )


class DeployedApis(_Response):
    apis: list[Deployed] = Field(
        description="each API of a config file that defines several (a cortex.yaml list), "
        "in the file's order"
    )


class ApiVersion(_Response):
    version: int
    created_at: str


class ApiDetail(ApiSummary):
    versions: list[ApiVersion]
    paused: bool = Field(
        default=False, description="leasing is paused for its jobs (POST /apis/{name}/pause)"
    )


class PausedApi(_Response):
    message: str
    paused: bool
    jobs: list[str] = Field(description="ids of the unfinished jobs the pause or resume reached")


class ApiList(_Response):
    apis: list[ApiSummary]


# --- jobs -----------------------------------------------------------------------------------


class JobSpec(_Response):
    """What a submission answers; also the start of every job status document."""

    job_id: str
    api_name: str
    api_version: int
    kind: Literal["BatchAPI"]
    source: SourceKind
    workers: int
    config: dict[str, Any]
    timeout: float | None
    batch_timeout: float | None
    max_receive_count: int
    priority: int
    total_batch_count: int
    start_time: str = Field(description="submission time, ISO 8601 UTC with milliseconds")
    retry_of: str | None = Field(default=None, description="present on retries: the original job")


class BatchMetrics(_Response):
    succeeded: int
    failed: int
    in_progress: int
    failed_attempts: int
    average_time_per_batch: float | None


class WorkerCounts(_Response):
    pending: int
    initializing: int
    running: int
    succeeded: int
    failed: int
    stalled: int


class JobStatusDocument(JobSpec):
    # Published: the statuses a job can be in (not the Cortex ones batchd never sets).
    status: Annotated[
        JobStatus, WithJsonSchema({"type": "string", "enum": [str(s) for s in REACHABLE_STATUSES]})
    ]
    end_time: str | None
    batches_in_queue: int
    batch_metrics: BatchMetrics
    worker_counts: WorkerCounts
    worker_details: list[WorkerDetail]
    error: str | None = Field(default=None, description="present when the job ended with an error")


class JobStatusResponse(_Response):
    job_status: JobStatusDocument
    endpoint: str = Field(description="the URL jobs of this API are submitted to")
    api_spec: ApiSummary = Field(description="the summary of the API version the job runs")


class JobList(_Response):
    jobs: list[JobStatusDocument] = Field(description="newest first")


class DryRunReport(_Response):
    dry_run: Literal[True]
    api_name: str
    total_batch_count: int
    item_count: int
    matched_files: list[str] | None = Field(
        default=None, description="the files read, for `delimited_files` and `file_path_lister`"
    )


# --- NDJSON stream lines --------------------------------------------------------------------


class ResultLine(_Response):
    """One line of `GET /batch/<api>/results`."""

    batch_id: str
    result: Any = Field(description="the value `handle_batch` returned")


class FailedLine(_Response):
    """One line of `GET /batch/<api>/failed`: a dead-lettered batch."""

    batch_id: str
    attempts: int
    error: str | None
    traceback: str | None
    payload: list[Any] = Field(description="the batch's items")


class LogRecord(BaseModel):
    """One line of `GET /batch/<api>/logs`; handlers may add keys of their own."""

    model_config = ConfigDict(extra="allow")

    asctime: str | None = None
    levelname: str | None = None
    message: str | None = None
    process: int | None = None
    labels: dict[str, Any] = Field(
        description="apiName, jobID, workerSlot and, in a batch, batchID"
    )
    stream: Literal["stdout", "stderr"] | None = Field(
        default=None, description="set when the record is a line the handler printed"
    )


# --- the dashboard's history and failed batches -------------------------------------------


class ThroughputSeries(_Response):
    succeeded: list[int] = Field(description="batches succeeded per bucket, oldest first")
    failed: list[int] = Field(description="failed attempts per bucket, oldest first")


class DurationHistogram(_Response):
    counts: list[int] = Field(
        description="succeeded batches per bucket of `batch_duration_bounds` (not cumulative), "
        "then those slower than the last bound"
    )
    sum: float = Field(description="seconds of all of them")


class ApiHistory(_Response):
    window: Literal["1h", "1d"]
    step_seconds: int = Field(description="seconds per bucket: 1 (1h) or 60 (1d)")
    start: int = Field(description="the first bucket's start, Unix seconds")
    scope: Literal["node"] = Field(
        description="counted by this daemon since it started (on a shared PostgreSQL queue, "
        "what this node's workers did)"
    )
    apis: dict[str, ThroughputSeries]
    batch_duration_bounds: list[float] = Field(
        description="upper bounds (seconds) of the buckets of batchd_batch_duration_seconds"
    )
    batch_durations: dict[str, DurationHistogram] = Field(
        description="by API: the batch-duration histogram /metrics exports, since the start"
    )


class JobHistory(_Response):
    job_id: str
    step_seconds: int
    start_time: str = Field(description="submission time, ISO 8601 UTC with milliseconds")
    end_time: str | None
    buckets: list[list[int]] = Field(
        description="[bucket start (Unix seconds), batches succeeded, failed attempts], oldest "
        "first; buckets with neither are left out. From the store: every node's work"
    )


class FailedBatchEntry(_Response):
    batch_id: str
    job_id: str
    api_name: str
    attempts: int
    error: str | None
    traceback: str | None
    failed_at: str | None = Field(description="the last attempt's failure, ISO 8601 UTC")


class FailedBatchPage(_Response):
    failed: list[FailedBatchEntry] = Field(description="newest job first, then by batch")
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null: no more")
