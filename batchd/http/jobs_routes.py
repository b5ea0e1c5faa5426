"""/batch/<api>: the Cortex-compatible job endpoints."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from batchd.admission.submission import parse_submission, plan_batches
from batchd.errors import ApiError, bad_request, conflict, invalid, not_found
from batchd.http import schemas
from batchd.http.apis_routes import api_summary
from batchd.http.app import Services, services_of
from batchd.http.body import (
    JSON_CONTENT_TYPES,
    bool_query,
    int_query,
    read_body,
    require_content_type,
    required_query,
)
from batchd.http.openapi import JOB_LIST_DEFAULT, JOB_LIST_MAX
from batchd.observe.joblogs import LEVELS, tail_offset
from batchd.store import views
from batchd.store.base import ApiRecord, BatchCounts, JobRecord, NewJob, batch_id, new_job_id
from batchd.store.chunks import BatchChunks

NDJSON = "application/x-ndjson"


def add_routes(app: web.Application) -> None:
    app.router.add_post("/batch/{api}", submit)
    app.router.add_get("/batch/{api}", get_jobs)
    app.router.add_delete("/batch/{api}", stop)
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
    _require_gpus(services, api)
    config = services.config
    body = await read_body(request, config.max_request_size, config.request_read_timeout)
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
    )
    try:
        if dry_run:
            report = schemas.DryRunReport(
                dry_run=True,
                api_name=api.name,
                total_batch_count=plan.batches.count,
                item_count=plan.item_count,
            )
            if plan.matched_files is not None:
                report.matched_files = plan.matched_files
            return web.json_response(report.body())
        job = NewJob(
            job_id=new_job_id(),
            api_name=api.name,
            api_version=api.version,
            kind=plan.kind,
            workers=submission.workers,
            config=submission.config,
            timeout=submission.timeout,
            batch_timeout=(
                submission.batch_timeout
                or api.spec["handler"].get("batch_timeout")
                or config.batch_timeout
            ),
            max_receive_count=submission.max_receive_count_value(),
            priority=submission.priority,
            created_at=time.time(),
        )
        return await _start(services, job, plan.batches, started)
    finally:
        plan.close()


def _require_gpus(services: Services, api: ApiRecord) -> None:
    needed = int(api.spec["compute"].get("gpu", 0))
    available = len(services.scheduler.gpus)
    if needed > available:
        raise invalid(
            f"API {api.name} needs {needed} GPU(s) per worker; this machine has {available}",
            "compute.gpu",
        )


async def get_jobs(request: web.Request) -> web.Response:
    services = services_of(request)
    api = await services.registry.require(request.match_info["api"])
    job_id = request.query.get("jobID")
    if job_id:
        job = await _job_of(services, api.name, job_id)
        return web.json_response(
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
    return web.json_response({"jobs": [_rendered(services, *listed) for listed in jobs]})


async def all_jobs(request: web.Request) -> web.Response:
    """Jobs of every deployed API, newest first; `active=true` keeps pending and running."""
    services = services_of(request)
    names = {api.name for api in await services.store.list_apis()}
    active = bool_query(request, "active")
    limit = int_query(request, "limit", default=100, minimum=1, maximum=1_000)
    before = await _cursor(services, request, names)
    jobs = await services.store.list_jobs_page(sorted(names), limit, before, active)
    return web.json_response({"jobs": [_rendered(services, *listed) for listed in jobs]})


async def _cursor(services: Services, request: web.Request, api_names: set[str]) -> str | None:
    """`before`: the id of the last job of the previous page (jobs older than it follow)."""
    before = request.query.get("before")
    if before is None:
        return None
    job = await services.store.get_job(before) if before else None
    if job is None or job.api_name not in api_names:
        raise bad_request(
            f"query parameter before must be the id of a job in this listing, not {before[:64]!r}",
            "before",
        )
    return job.job_id


async def stop(request: web.Request) -> web.Response:
    services, job = await _target(request)
    await services.scheduler.stop_job(job.job_id)
    return web.json_response(schemas.Message(message=f"stopped job {job.job_id}").body())


async def results(request: web.Request) -> web.StreamResponse:
    services, job = await _target(request, unpruned=True)

    async def lines() -> AsyncIterator[bytes]:
        async for row in services.store.results(job.job_id):
            name = json.dumps(batch_id(job.job_id, row.seq)).encode()
            yield b'{"batch_id":%s,"result":%s}\n' % (name, row.result)

    return await _stream(request, lines())


async def failed(request: web.Request) -> web.StreamResponse:
    services, job = await _target(request, unpruned=True)
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
    services, job = await _target(request, unpruned=True)
    follow = bool_query(request, "follow")
    level = request.query.get("level")
    if level is not None and level.upper() not in LEVELS:
        raise bad_request(f"level must be one of {', '.join(LEVELS)}", "level")
    tail = int_query(request, "tail", default=0, minimum=1, maximum=1_000_000)
    path = services.joblogs.path(job.job_id)
    start = await asyncio.to_thread(tail_offset, path, tail) if tail else 0

    async def job_ended() -> bool:
        current = await services.store.get_job(job.job_id)
        return current is None or current.status.terminal

    lines = services.joblogs.read(
        job.job_id,
        min_level=level,
        batch_id=request.query.get("batchID"),
        follow=follow,
        job_ended=job_ended,
        start=start,
    )
    return await _stream(request, lines)


async def retry(request: web.Request) -> web.Response:
    """Submit a new job made of the dead-lettered batches, on the API's latest version."""
    started = time.perf_counter()
    services, original = await _target(request, unpruned=True)
    api = await services.registry.require(original.api_name)
    payloads = [dead.payload async for dead in services.store.dead_letters(original.job_id)]
    if not payloads:
        raise conflict(f"job {original.job_id} has no dead-lettered batches", "jobID")
    _require_gpus(services, api)
    job = NewJob(
        job_id=new_job_id(),
        api_name=api.name,
        api_version=api.version,
        kind=original.kind,
        workers=original.workers,
        config=original.config,
        timeout=original.timeout,
        batch_timeout=original.batch_timeout,
        max_receive_count=original.max_receive_count,
        priority=original.priority,
        created_at=time.time(),
        retry_of=original.job_id,
    )
    return await _start(services, job, payloads, started)


async def _start(
    services: Services, job: NewJob, batches: BatchChunks | list[bytes], started: float
) -> web.Response:
    """Store the job with all its batches (one transaction), then let the scheduler run it;
    `started` is the time.perf_counter() of the request, for the admission histogram."""
    record = await services.store.create_job(job, batches)
    services.scheduler.admit(record)
    services.metrics.admitted(record.api_name, started)
    return web.json_response(views.job_spec(record))


async def _target(request: web.Request, unpruned: bool = False) -> tuple[Services, JobRecord]:
    """The services and the job that `/batch/<api>...?jobID=` names."""
    services = services_of(request)
    api = await services.registry.require(request.match_info["api"])
    job = await _job_of(services, api.name, required_query(request, "jobID"))
    if unpruned:
        _require_unpruned(job)
    return services, job


async def _stream(request: web.Request, lines: AsyncIterator[bytes]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": NDJSON})
    await response.prepare(request)
    async for line in lines:
        await response.write(line)
    await response.write_eof()
    return response


async def _job_of(services: Services, api_name: str, job_id: str) -> JobRecord:
    job = await services.store.get_job(job_id)
    if job is None or job.api_name != api_name:
        raise not_found(f"job {job_id} not found for API {api_name}", "jobID")
    return job


def _require_unpruned(job: JobRecord) -> None:
    if job.pruned_at is not None:
        raise ApiError(
            410,
            f"the batches of job {job.job_id} were pruned on {views.iso_time(job.pruned_at)} "
            "(retention_days)",
            "jobID",
        )


async def _status(services: Services, job: JobRecord) -> dict[str, Any]:
    return _rendered(services, job, await services.store.counts(job.job_id))


def _rendered(services: Services, job: JobRecord, counts: BatchCounts) -> dict[str, Any]:
    scheduler = services.scheduler
    return views.job_status(
        job, counts, scheduler.worker_counts(job.job_id), scheduler.worker_details(job.job_id)
    )
