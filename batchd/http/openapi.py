"""``GET /openapi.json``: the OpenAPI 3.1 description of the HTTP API, as a table.

Each operation below names its path, parameters, status codes and the pydantic models of
its bodies: requests from the models the routes validate with, responses from
:mod:`batchd.http.schemas`. :mod:`batchd.http.openapi_builder` turns the table into the
document. ``tests/test_openapi.py`` checks that every route of the app is described here.
"""

from __future__ import annotations

import copy
import functools
import json
from typing import Any

from aiohttp import web

from batchd import packing
from batchd.admission.job_body import JobSubmission
from batchd.apis.spec import MAX_API_NAME_LENGTH
from batchd.constants import VERSION
from batchd.http import schemas
from batchd.http.openapi_builder import Body, Operation, Param, build_document
from batchd.observe.joblogs import LEVELS
from batchd.statuses import JobStatus

PATH = "/openapi.json"
NDJSON = "application/x-ndjson"

# Modules whose routes are deliberately not part of this description: the dashboard's
# static files (HTML, JS, CSS) are no JSON API. Every other route must be an operation
# below: tests/test_openapi.py enforces it.
UNDOCUMENTED_MODULES = frozenset({"batchd.http.ui_routes"})

# Query limits shared with the routes that enforce them.
JOB_LIST_DEFAULT = 100
JOB_LIST_MAX = 10_000

ERROR_TEXT = {
    400: "Bad request: the body is not valid JSON or not an object, or a query parameter is "
    "missing or invalid (`field` names it).",
    401: "`token_file` is set and the request has no token or a wrong one.",
    403: "Forbidden: the read-only token was used to change something, or a path is outside "
    "`input_roots` (or `input_roots` is empty).",
    404: "The API is not deployed (`field: api`) or the job does not exist for it "
    "(`field: jobID`).",
    408: "The request body did not arrive within `request_read_timeout`.",
    409: "Conflict: the job has already ended (to stop, pause or resume), or it has no "
    "dead-lettered batches.",
    410: "The job's batches, results and log were pruned (`retention_days`).",
    413: (
        "Too large: the body, the project, the archive, one batch or the number of batches "
        "is over a limit."
    ),
    415: "Unsupported `Content-Type`.",
    422: "The body is well-formed but invalid (`field` names the offending part).",
    500: "Internal error; details are in the daemon's log.",
    503: "The database is busy or unavailable and nothing was stored; retry after `Retry-After`.",
    507: "The disk holding the state directory is full; nothing was stored.",
}

# Any operation may meet these: an internal error, a busy database or a full disk.
ALWAYS = (500, 503, 507)

INFO = {
    "title": "batchd",
    "version": VERSION,
    "description": "Cortex-style Batch API jobs on one machine. Errors are "
    '`{"error": {"message", "field"}}`; NDJSON streams send one JSON object per line, '
    "each described by the response schema.",
}
TAGS = [
    {"name": "daemon", "description": "health, status, metrics and pruning"},
    {"name": "apis", "description": "deploying Handler projects"},
    {"name": "jobs", "description": "the Cortex-compatible job endpoints"},
]
SECURITY_SCHEMES = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "description": "Required when the daemon sets `token_file`: "
        "`Authorization: Bearer <token>`. The `read_only_token_file` token is "
        "accepted for GET (and HEAD) only. A daemon without `token_file` listens on "
        "loopback or a Unix socket only, and needs no token.",
    }
}


API = Param("api", "path", {"type": "string"}, "the API's name")
API_NAME = Param("name", "path", {"type": "string"}, "the API's name")
JOB_ID = Param("jobID", "query", {"type": "string", "minLength": 1}, "the job's id", required=True)
DRY_RUN = Param(
    "dryRun", "query", {"type": "boolean", "default": False}, "only validate and report"
)
CHECK = Param(
    "check",
    "query",
    {"type": "boolean", "default": True},
    "import the Handler once before recording the version (422 with its traceback if it fails)",
)
CONFIG = Param(
    "config",
    "query",
    {"type": "string", "pattern": f"^{packing.CONFIG_NAME.pattern}$"},
    "the project's config file, at the top of the archive: batchd.toml (TOML) or a Cortex "
    "file (.yaml or .yml). Default: batchd.toml, else cortex.yaml, else cortex.yml",
)
DEPLOY_NAME = Param(
    "name",
    "query",
    # The length lives in the pattern: a pattern plus maxLength makes generators (schemathesis)
    # produce names mostly too long, then filter them out.
    {"type": "string", "pattern": f"^[a-z](?:[-a-z0-9]{{0,{MAX_API_NAME_LENGTH - 2}}}[a-z0-9])?$"},
    "deploy only the API of this name from a config file that defines several (422 on "
    "`name` when it defines none of that name)",
)
BEFORE = Param(
    "before",
    "query",
    {"type": "string", "minLength": 1},
    "paging: the id of the last job of the previous page; older jobs follow",
)

API_FILTER = Param("api", "query", {"type": "string"}, "only this API's (404 when not deployed)")
_STATUSES = "|".join(status.value for status in JobStatus)

_JSON = ("application/json",)
_ARCHIVES = ("application/gzip", "application/x-tar", "application/octet-stream")

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "get",
        "/healthz",
        "healthz",
        "daemon",
        "Liveness, and that the queue's database answers (503 when not); never needs a token",
        {200: ("the daemon answers", Body((schemas.Health,)))},
        public=True,
    ),
    Operation(
        "get",
        PATH,
        "openapi",
        "daemon",
        "This OpenAPI description; never needs a token",
        {200: ("the OpenAPI 3.1 document", Body(raw_schema={"type": "object"}))},
        public=True,
    ),
    Operation(
        "get",
        "/metrics",
        "metrics",
        "daemon",
        "Prometheus metrics, in the text exposition format",
        {
            200: (
                "the metrics (text format 0.0.4)",
                Body(media_types=("text/plain",), raw_schema={"type": "string"}),
            )
        },
        description="Counters and histograms of batch outcomes, worker deaths and admissions "
        "by API, SQLite commit latency, and gauges of jobs by status, queue depth and "
        "workers. No label holds a job or batch id. The read-only token is enough.",
    ),
    Operation(
        "get",
        "/status",
        "status",
        "daemon",
        "The daemon: version, state dir, disk use, workers, GPUs",
        {200: ("the daemon's status", Body((schemas.StatusPage,)))},
    ),
    Operation(
        "get",
        "/workers",
        "workers",
        "daemon",
        "Live workers with their memory and CPU use, and the last worker exits with their cause",
        {200: ("the workers and their history", Body((schemas.WorkersPage,)))},
    ),
    Operation(
        "post",
        "/admin/prune",
        "prune",
        "daemon",
        "Prune finished jobs past their retention now",
        {200: ("what was pruned (or would be, with dryRun)", Body((schemas.PruneReport,)))},
        errors=(400, 403),
        params=(DRY_RUN,),
    ),
    Operation(
        "post",
        "/apis",
        "deployApi",
        "apis",
        "Deploy a project: a tar or tar.gz archive, as `batchd deploy` sends",
        {
            201: (
                "a new version was deployed (of at least one API, for a file of several)",
                Body((schemas.Deployed, schemas.DeployedApis)),
            ),
            200: (
                "the content is the same as the latest version's (of every API)",
                Body((schemas.Deployed, schemas.DeployedApis)),
            ),
        },
        errors=(400, 403, 408, 413, 415, 422),
        params=(CHECK, CONFIG, DEPLOY_NAME),
        description="The config file defines one API (batchd.toml, or a cortex.yaml with one) "
        "and the answer is that API's version; a cortex.yaml that defines several deploys "
        'each, in order, and answers `{"apis": [...]}` (one entry each). `warnings` lists '
        "the cortex.yaml keys accepted without meaning here.",
        request=Body(
            media_types=_ARCHIVES,
            raw_schema={"type": "string", "contentMediaType": "application/x-tar"},
        ),
    ),
    Operation(
        "get",
        "/apis",
        "listApis",
        "apis",
        "Deployed APIs (latest versions)",
        {200: ("the APIs", Body((schemas.ApiList,)))},
    ),
    Operation(
        "get",
        "/apis/{name}",
        "getApi",
        "apis",
        "One API and its versions",
        {200: ("the API", Body((schemas.ApiDetail,)))},
        errors=(404,),
        params=(API_NAME,),
    ),
    Operation(
        "delete",
        "/apis/{name}",
        "deleteApi",
        "apis",
        "Delete an API and stop its running jobs",
        {200: ("deleted", Body((schemas.DeletedApi,)))},
        errors=(403, 404),
        params=(API_NAME,),
    ),
    Operation(
        "post",
        "/batch/{api}",
        "submitJob",
        "jobs",
        "Submit a job; with dryRun, only validate it",
        {
            200: (
                "the job spec, or with dryRun the report",
                Body((schemas.JobSpec, schemas.DryRunReport)),
            )
        },
        errors=(400, 403, 404, 408, 413, 415, 422),
        params=(API, DRY_RUN),
        request=Body((JobSubmission,)),
        description="The body is also accepted with the Content-Type "
        "`application/x-www-form-urlencoded` or `text/plain` (what `curl -d` sends), or none.",
    ),
    Operation(
        "get",
        "/batch/{api}",
        "getJobs",
        "jobs",
        "One job's status (with jobID), or the API's jobs, newest first",
        {
            200: (
                "with jobID, the job's status; without, the list",
                Body((schemas.JobStatusResponse, schemas.JobList)),
            )
        },
        errors=(400, 404),
        params=(
            Param("jobID", "query", {"type": "string"}, "the job to show; absent: list jobs"),
            Param(
                "limit",
                "query",
                {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": JOB_LIST_MAX,
                    "default": JOB_LIST_DEFAULT,
                },
                "without jobID: the most jobs to list",
            ),
            BEFORE,
            API,
        ),
    ),
    Operation(
        "get",
        "/jobs",
        "listAllJobs",
        "jobs",
        "Jobs of every deployed API, newest first",
        {200: ("the jobs", Body((schemas.JobList,)))},
        errors=(400, 404),
        params=(
            Param(
                "active",
                "query",
                {"type": "boolean", "default": False},
                "keep only pending and running jobs",
            ),
            Param(
                "limit",
                "query",
                {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                "the most jobs to list",
            ),
            BEFORE,
            Param(
                "status",
                "query",
                {
                    "type": "string",
                    "pattern": f"^(?:{_STATUSES})(?:,(?:{_STATUSES}))*$",
                },
                "keep only jobs of these statuses (comma-separated)",
            ),
            API_FILTER,
        ),
    ),
    Operation(
        "delete",
        "/batch/{api}",
        "stopJob",
        "jobs",
        "Stop a job",
        {200: ("stopped", Body((schemas.Message,)))},
        errors=(400, 403, 404, 409),
        params=(API, JOB_ID),
    ),
    Operation(
        "get",
        "/batch/{api}/results",
        "getResults",
        "jobs",
        "Results of the succeeded batches that returned a value, in batch order",
        {200: ("one JSON object per line", Body((schemas.ResultLine,), (NDJSON,)))},
        errors=(400, 404, 410),
        params=(API, JOB_ID),
    ),
    Operation(
        "get",
        "/batch/{api}/failed",
        "getFailed",
        "jobs",
        "The dead-lettered batches",
        {200: ("one JSON object per line", Body((schemas.FailedLine,), (NDJSON,)))},
        errors=(400, 404, 410),
        params=(
            API,
            JOB_ID,
            Param(
                "limit",
                "query",
                {"type": "integer", "minimum": 1, "maximum": 1_000_000_000},
                "the most batches to send; absent: all",
            ),
        ),
    ),
    Operation(
        "post",
        "/batch/{api}/retry",
        "retryJob",
        "jobs",
        "A new job of the dead-lettered batches, on the API's latest version",
        {200: ("the new job's spec, with retry_of", Body((schemas.JobSpec,)))},
        errors=(400, 403, 404, 409, 410, 422),
        params=(API, JOB_ID),
    ),
    Operation(
        "get",
        "/batch/{api}/logs",
        "getLogs",
        "jobs",
        "The job's log records",
        {200: ("one JSON log record per line", Body((schemas.LogRecord,), (NDJSON,)))},
        errors=(400, 404, 410),
        params=(
            API,
            JOB_ID,
            Param(
                "follow",
                "query",
                {"type": "boolean", "default": False},
                "keep streaming until the job ends",
            ),
            Param(
                "level",
                "query",
                {"type": "string", "enum": [level.lower() for level in LEVELS]},
                "the minimum level (case does not matter)",
            ),
            Param("batchID", "query", {"type": "string"}, "keep only this batch's records"),
            Param(
                "tail",
                "query",
                {"type": "integer", "minimum": 1, "maximum": 1_000_000},
                "only the last N lines of the log (before level and batchID filter them)",
            ),
            Param(
                "cursor",
                "query",
                {"type": "boolean", "default": False},
                "add log_cursor to each record: the position just after it, for `after`",
            ),
            Param(
                "after",
                "query",
                {"type": "integer", "minimum": 0, "maximum": 2**53},
                "resume at a record's log_cursor (not with tail): after a dropped follow",
            ),
        ),
    ),
)


def document() -> dict[str, Any]:
    """The OpenAPI document (a fresh copy)."""
    return copy.deepcopy(_build())


@functools.cache
def _build() -> dict[str, Any]:
    """Built once: the document depends on nothing but the code."""
    # Here, not at the top: that table reads the parameters defined above.
    from batchd.http.openapi_dashboard import DASHBOARD_OPERATIONS
    from batchd.http.openapi_pause import PAUSE_OPERATIONS

    return build_document(
        OPERATIONS + DASHBOARD_OPERATIONS + PAUSE_OPERATIONS,
        info=INFO,
        tags=TAGS,
        security_schemes=SECURITY_SCHEMES,
        error_model=schemas.Error,
        error_text=ERROR_TEXT,
        always=ALWAYS,
    )


@functools.cache
def _encoded() -> bytes:
    return json.dumps(_build(), separators=(",", ":")).encode() + b"\n"


async def serve(request: web.Request) -> web.Response:
    return web.Response(body=_encoded(), content_type="application/json")
