"""The pause operations of the OpenAPI description (:mod:`batchd.http.openapi`): pausing
and resuming a job's or an API's leasing."""

from __future__ import annotations

from batchd.http import schemas
from batchd.http.openapi import API, API_NAME, JOB_ID
from batchd.http.openapi_builder import Body, Operation

PAUSE_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "post",
        "/apis/{name}/pause",
        "pauseApi",
        "apis",
        "Pause leasing for the API's jobs, and for those submitted until it is resumed",
        {200: ("paused", Body((schemas.PausedApi,)))},
        errors=(403, 404),
        params=(API_NAME,),
    ),
    Operation(
        "post",
        "/apis/{name}/resume",
        "resumeApi",
        "apis",
        "Resume leasing for the API's jobs (a job paused on its own stays paused)",
        {200: ("resumed", Body((schemas.PausedApi,)))},
        errors=(403, 404),
        params=(API_NAME,),
    ),
    Operation(
        "post",
        "/batch/{api}/pause",
        "pauseJob",
        "jobs",
        "Pause a job: its leased batches finish, nothing more is leased; status `paused`",
        {200: ("the job's status", Body((schemas.JobStatusDocument,)))},
        errors=(400, 403, 404, 409),
        params=(API, JOB_ID),
    ),
    Operation(
        "post",
        "/batch/{api}/resume",
        "resumeJob",
        "jobs",
        "Resume a paused job (while its API is paused, it stays paused)",
        {200: ("the job's status", Body((schemas.JobStatusDocument,)))},
        errors=(400, 403, 404, 409),
        params=(API, JOB_ID),
    ),
)
