"""Daemon-wide endpoints: status (workers, GPUs, disk use) and pruning."""

from __future__ import annotations

import asyncio
import dataclasses

from aiohttp import web

from batchd import __version__
from batchd.http import schemas
from batchd.http.app import services_of
from batchd.http.body import bool_query
from batchd.observe.retention import disk_usage


def add_routes(app: web.Application) -> None:
    app.router.add_get("/status", status)
    app.router.add_post("/admin/prune", prune)


async def status(request: web.Request) -> web.Response:
    services = services_of(request)
    scheduler = services.scheduler
    usage = await asyncio.to_thread(disk_usage, services.config.state_path)
    page = schemas.StatusPage(
        version=__version__,
        state_dir=str(services.config.state_path),
        disk_usage=schemas.DiskUsage(**usage),
        max_workers=services.config.max_workers,
        gpus=scheduler.gpus,
        active_jobs=sorted(scheduler.runs),
        workers=[
            schemas.DaemonWorker(job_id=job_id, **worker)
            for job_id in sorted(scheduler.runs)
            for worker in scheduler.worker_details(job_id)
        ],
    )
    return web.json_response(page.body())


async def prune(request: web.Request) -> web.Response:
    services = services_of(request)
    report = await services.pruner.prune(dry_run=bool_query(request, "dryRun"))
    return web.json_response(schemas.PruneReport(**dataclasses.asdict(report)).body())
