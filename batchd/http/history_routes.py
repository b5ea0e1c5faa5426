"""What the dashboard charts and lists beyond the current state: recent throughput per API
(this daemon's, in memory), a job's whole history (the store's) and the dead-lettered
batches across jobs."""

from __future__ import annotations

import time

from aiohttp import web

from batchd.errors import BadRequest
from batchd.http import schemas
from batchd.http.app import json_response, services_of
from batchd.http.body import int_query, required_query
from batchd.observe.history import WINDOWS
from batchd.store.records import batch_id
from batchd.store.views import iso_time

FAILED_PAGE_DEFAULT = 50
FAILED_PAGE_MAX = 500
ERROR_FILTER_MAX = 200
# A job's chart has at most this many buckets: the step grows with the job's length.
JOB_BUCKETS_MAX = 3600
JOB_STEPS = (1, 10, 60, 600, 3600, 86_400)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/history", api_history)
    app.router.add_get("/batch/{api}/history", job_history)
    app.router.add_get("/failed", failed_batches)


async def api_history(request: web.Request) -> web.Response:
    services = services_of(request)
    names = await api_names(request)
    window_name = request.query.get("window", "1h")
    window = WINDOWS.get(window_name)
    if window is None:
        raise BadRequest(f"window must be one of {', '.join(WINDOWS)}", "window")
    now = time.time()
    series = {}
    for name in names:
        _, succeeded, failed = services.metrics.history.series(name, window, now)
        series[name] = schemas.ThroughputSeries(succeeded=succeeded, failed=failed)
    bounds, histograms = services.metrics.batch_duration.snapshot()
    answer = schemas.ApiHistory(
        window=window_name,  # type: ignore[arg-type]
        step_seconds=window.step,
        start=window.start(now),
        scope="node",
        apis=series,
        batch_duration_bounds=bounds,
        batch_durations={
            name: schemas.DurationHistogram(counts=counts, sum=total)
            for name, (counts, total) in sorted(histograms.items())
            if name in names
        },
    )
    return json_response(answer.body())


async def job_history(request: web.Request) -> web.Response:
    services = services_of(request)
    api = await services.registry.require(request.match_info["api"])
    job = await services.admission.find_job(
        api.name, required_query(request, "jobID"), unpruned=True
    )
    span = (job.end_time or time.time()) - job.created_at
    step = next((s for s in JOB_STEPS if span / s <= JOB_BUCKETS_MAX), JOB_STEPS[-1])
    buckets = await services.store.job_history(job.job_id, step)
    answer = schemas.JobHistory(
        job_id=job.job_id,
        step_seconds=step,
        start_time=iso_time(job.created_at) or "",
        end_time=iso_time(job.end_time),
        buckets=[list(bucket) for bucket in buckets],
    )
    return json_response(answer.body())


async def failed_batches(request: web.Request) -> web.Response:
    """Dead-lettered batches across jobs, newest job first: `api` narrows to one API, `q`
    to those whose last error contains that text."""
    services = services_of(request)
    names = await api_names(request)
    limit = int_query(
        request, "limit", default=FAILED_PAGE_DEFAULT, minimum=1, maximum=FAILED_PAGE_MAX
    )
    text = request.query.get("q", "")
    if len(text) > ERROR_FILTER_MAX:
        raise BadRequest(f"query parameter q must be at most {ERROR_FILTER_MAX} characters", "q")
    before = int_query(request, "cursor", default=0, minimum=1, maximum=(1 << 63) - 1) or None
    found = await services.store.failed_batches(sorted(names), limit + 1, before, text)
    page = found[:limit]
    answer = schemas.FailedBatchPage(
        failed=[
            schemas.FailedBatchEntry(
                batch_id=batch_id(entry.job_id, entry.seq),
                job_id=entry.job_id,
                api_name=entry.api_name,
                attempts=entry.attempts,
                error=entry.error,
                traceback=entry.traceback,
                failed_at=iso_time(entry.failed_at),
            )
            for entry in page
        ],
        next_cursor=str(page[-1].batch_key) if len(found) > limit else None,
    )
    return json_response(answer.body())


async def api_names(request: web.Request) -> set[str]:
    """The deployed API that `api` names (404 when none is), or every deployed API."""
    services = services_of(request)
    if request.query.get("api"):
        return {(await services.registry.require(request.query["api"])).name}
    return {api.name for api in await services.store.list_apis()}
