"""The dashboard's operations of the OpenAPI description (:mod:`batchd.http.openapi`):
recent throughput, a job's history, and the dead-lettered batches across jobs."""

from __future__ import annotations

from batchd.http import schemas
from batchd.http.history_routes import ERROR_FILTER_MAX, FAILED_PAGE_DEFAULT, FAILED_PAGE_MAX
from batchd.http.openapi import API, API_FILTER, JOB_ID
from batchd.http.openapi_builder import Body, Operation, Param
from batchd.observe.history import WINDOWS

DASHBOARD_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "get",
        "/history",
        "getHistory",
        "daemon",
        "Recent throughput per API (this daemon's), and the batch-duration histograms",
        {200: ("the series", Body((schemas.ApiHistory,)))},
        errors=(400, 404),
        params=(
            API_FILTER,
            Param(
                "window",
                "query",
                {"type": "string", "enum": list(WINDOWS), "default": "1h"},
                "1h: a bucket per second; 1d: a bucket per minute",
            ),
        ),
        description="Batches succeeded and failed attempts per bucket, counted in memory by "
        "this daemon since it started: on a shared PostgreSQL queue, each node's own.",
    ),
    Operation(
        "get",
        "/batch/{api}/history",
        "getJobHistory",
        "jobs",
        "A job's whole history: batches succeeded and failed attempts over time",
        {200: ("the job's buckets", Body((schemas.JobHistory,)))},
        errors=(400, 404, 410),
        params=(API, JOB_ID),
        description="From the store (every node's work), with a bucket of 1 s for a job of "
        "up to an hour, longer for longer jobs (at most 3600 buckets).",
    ),
    Operation(
        "get",
        "/failed",
        "listFailedBatches",
        "jobs",
        "Dead-lettered batches across jobs, newest job first",
        {200: ("a page of them", Body((schemas.FailedBatchPage,)))},
        errors=(400, 404),
        params=(
            API_FILTER,
            Param(
                "q",
                "query",
                {"type": "string", "maxLength": ERROR_FILTER_MAX},
                "keep those whose last error contains this text (case-sensitive, no wildcards)",
            ),
            Param(
                "limit",
                "query",
                {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": FAILED_PAGE_MAX,
                    "default": FAILED_PAGE_DEFAULT,
                },
                "the most batches to list",
            ),
            Param(
                "cursor",
                "query",
                {"type": "string", "pattern": "^[1-9][0-9]{0,17}$"},
                "paging: the next_cursor of the previous page",
            ),
        ),
    ),
)
