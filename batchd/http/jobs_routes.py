"""/batch/<api>: the Cortex-compatible job endpoints."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from batchd.admission.service import DryRun
from batchd.errors import BadRequest
from batchd.http import history_routes, schemas
from batchd.http.apis_routes import api_summary
from batchd.http.app import Services, json_response, services_of
from batchd.http.body import (
    JSON_CONTENT_TYPES,
    bool_query,
    int_query,
    read_body,
    require_content_type,
    required_query,
)
from batchd.http.openapi import JOB_LIST_DEFAULT, JOB_LIST_MAX
from batchd.observe.joblogs import LEVELS, LogRead
from batchd.store import views
from batchd.store.records import BatchCounts, JobRecord, JobStatus, batch_id

NDJSON = "application/x-ndjson"
# A log read position (`after`, a record's log_cursor): a byte offset or a row id.
LOG_POSITION_MAX = 2**53


def add_routes(app: web.Application) -> None:
    app.router.add_post("/batch/{api}", submit)
    app.router.add_get("/batch/{api}", get_jobs)
    app.router.add_delete("/batch/{api}", stop)
    app.router.add_post("/batch/{api}/pause", pause)
    app.router.add_post("/batch/{api}/resume", resume)
    app.router.add_get("/batch/{api}/results", results)
    app.router.add_get("/batch/{api}/failed", failed)
    app.router.add_post("/batch/{api}/retry", retry)
    app.router.add_get("/batch/{api}/logs", logs)
    app.router.add_get("/jobs", all_jobs)


async def submit(request: web.Request) -> web.Response:
    started = time.perf_counter()
    services = services_of(request)
    api = await services.registry.require(request.match_info["api"])
    dry_run = bool_query(request, "dryRun")
    require_content_type(request, JSON_CONTENT_TYPES)
    # Before the body is read: a job this machine cannot run is refused at once.
    services.admission.require_gpus(api)
    config = services.config
    body = await read_body(request, config.max_request_size, config.request_read_timeout)
    admitted = await services.admission.submit(api, body, dry_run=dry_run, started=started)
    if isinstance(admitted, DryRun):
        report = schemas.DryRunReport(
            dry_run=True,
            api_name=admitted.api_name,
            total_batch_count=admitted.total_batch_count,
            item_count=admitted.item_count,
        )
        if admitted.matched_files is not None:
            report.matched_files = admitted.matched_files
        return json_response(report.body())
    return json_response(views.job_spec(admitted))


async def get_jobs(request: web.Request) -> web.Response:
    services = services_of(request)
    api = await services.registry.require(request.match_info["api"])
    job_id = request.query.get("jobID")
    if job_id:
        job = await services.admission.find_job(api.name, job_id)
        return json_response(
            {
                "job_status": await _status(services, job),
                "endpoint": f"{request.url.origin()}/batch/{api.name}",
                "api_spec": api_summary(
                    await services.registry.version(api.name, job.api_version)
                ).body(),
            }
        )
    limit = int_query(request, "limit", default=JOB_LIST_DEFAULT, minimum=1, maximum=JOB_LIST_MAX)
    before = await _cursor(services, request, {api.name})
    jobs = await services.store.list_jobs_page([api.name], limit, before)
    return json_response({"jobs": [_rendered(services, *listed) for listed in jobs]})


async def all_jobs(request: web.Request) -> web.Response:
    """Jobs of every deployed API (or of `api`), newest first; `active=true` keeps pending
    and running ones, `status=a,b` those of the statuses listed."""
    services = services_of(request)
    names = await history_routes.api_names(request)
    active = bool_query(request, "active")
    statuses = _statuses(request)
    limit = int_query(request, "limit", default=100, minimum=1, maximum=1_000)
    before = await _cursor(services, request, names)
    jobs = await services.store.list_jobs_page(sorted(names), limit, before, active, statuses)
    return json_response({"jobs": [_rendered(services, *listed) for listed in jobs]})


def _statuses(request: web.Request) -> list[str] | None:
    """`status`: a comma-separated list of job statuses."""
    raw = request.query.get("status")
    if not raw:
        return None
    wanted = [part.strip() for part in raw.split(",") if part.strip()]
    known = {status.value for status in JobStatus}
    if not wanted or any(status not in known for status in wanted):
        raise BadRequest(
            f"status must be a comma-separated list of job statuses ({', '.join(sorted(known))})",
            "status",
        )
    if bool_query(request, "active"):
        wanted = [status for status in wanted if not JobStatus(status).terminal]
    return wanted


async def _cursor(services: Services, request: web.Request, api_names: set[str]) -> str | None:
    """`before`: the id of the last job of the previous page (jobs older than it follow)."""
    before = request.query.get("before")
    if before is None:
        return None
    job = await services.store.get_job(before) if before else None
    if job is None or job.api_name not in api_names:
        raise BadRequest(
            f"query parameter before must be the id of a job in this listing, not {before[:64]!r}",
            "before",
        )
    return job.job_id


async def stop(request: web.Request) -> web.Response:
    services = services_of(request)
    api_name, job_id = await _job_named(request)
    job = await services.admission.stop(api_name, job_id)
    return json_response(schemas.Message(message=f"stopped job {job.job_id}").body())


async def pause(request: web.Request) -> web.Response:
    return await _paused(request, paused=True)


async def resume(request: web.Request) -> web.Response:
    return await _paused(request, paused=False)


async def _paused(request: web.Request, paused: bool) -> web.Response:
    """The job's status after the pause (or resume); pausing a paused job changes nothing
    and answers 200, a job that has ended 409."""
    services = services_of(request)
    api_name, job_id = await _job_named(request)
    job = await services.admission.find_job(api_name, job_id)
    job = await services.scheduler.pause_job(job.job_id, paused)
    return json_response(await _status(services, job))


async def results(request: web.Request) -> web.StreamResponse:
    services, job = await _target(request)

    async def lines() -> AsyncIterator[bytes]:
        async for row in services.store.results(job.job_id):
            name = json.dumps(batch_id(job.job_id, row.seq)).encode()
            yield b'{"batch_id":%s,"result":%s}\n' % (name, row.result)

    return await _stream(request, lines())


async def failed(request: web.Request) -> web.StreamResponse:
    services, job = await _target(request)
    limit = int_query(request, "limit", default=0, minimum=1, maximum=1_000_000_000)

    async def lines() -> AsyncIterator[bytes]:
        sent = 0
        async for dead in services.store.dead_letters(job.job_id):
            if limit and sent >= limit:
                return
            sent += 1
            record = {
                "batch_id": batch_id(job.job_id, dead.seq),
                "attempts": dead.attempts,
                "error": dead.error,
                "traceback": dead.traceback,
            }
            # The payload is stored as JSON: spliced in, not decoded and encoded again.
            head = json.dumps(record, ensure_ascii=False)[:-1].encode()
            yield head + b',"payload":' + dead.payload + b"}\n"

    return await _stream(request, lines())


async def logs(request: web.Request) -> web.StreamResponse:
    """The job's log as JSON lines; `follow=true` streams until the job ends."""
    services, job = await _target(request)
    follow = bool_query(request, "follow")
    level = request.query.get("level")
    if level is not None and level.upper() not in LEVELS:
        raise BadRequest(f"level must be one of {', '.join(LEVELS)}", "level")
    tail = int_query(request, "tail", default=0, minimum=1, maximum=1_000_000)
    after = int_query(request, "after", default=-1, minimum=0, maximum=LOG_POSITION_MAX)
    if tail and after >= 0:
        raise BadRequest("give tail or after, not both", "after")
    start = await services.joblogs.tail_start(job.job_id, tail) if tail else max(after, 0)

    async def job_ended() -> bool:
        current = await services.store.get_job(job.job_id)
        return current is None or current.status.terminal

    lines = services.joblogs.read(
        job.job_id,
        LogRead(
            min_level=level,
            batch_id=request.query.get("batchID"),
            follow=follow,
            job_ended=job_ended,
            start=start,
            cursor=bool_query(request, "cursor"),
        ),
    )
    return await _stream(request, lines)


async def retry(request: web.Request) -> web.Response:
    """Submit a new job made of the dead-lettered batches, on the API's latest version."""
    started = time.perf_counter()
    services = services_of(request)
    api_name, job_id = await _job_named(request)
    job = await services.admission.retry(api_name, job_id, started)
    return json_response(views.job_spec(job))


async def _target(request: web.Request) -> tuple[Services, JobRecord]:
    """The services and the unpruned job that `/batch/<api>...?jobID=` names."""
    services = services_of(request)
    api_name, job_id = await _job_named(request)
    return services, await services.admission.find_job(api_name, job_id, unpruned=True)


async def _job_named(request: web.Request) -> tuple[str, str]:
    """The deployed API and the job id that `/batch/<api>...?jobID=` names (in that order:
    an unknown API is a 404 before a missing jobID is a 400)."""
    api = await services_of(request).registry.require(request.match_info["api"])
    return api.name, required_query(request, "jobID")


async def _stream(request: web.Request, lines: AsyncIterator[bytes]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": NDJSON})
    await response.prepare(request)
    async for line in lines:
        await response.write(line)
    await response.write_eof()
    return response


async def _status(services: Services, job: JobRecord) -> dict[str, Any]:
    return _rendered(services, job, await services.store.counts(job.job_id))


def _rendered(services: Services, job: JobRecord, counts: BatchCounts) -> dict[str, Any]:
    scheduler = services.scheduler
    return views.job_status(
        job, counts, scheduler.worker_counts(job.job_id), scheduler.worker_details(job.job_id)
    )
