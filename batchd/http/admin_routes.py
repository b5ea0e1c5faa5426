"""Daemon-wide endpoints: status (workers, GPUs, disk use) and pruning."""

from __future__ import annotations

import asyncio
import dataclasses

from aiohttp import web

from batchd.constants import VERSION
from batchd.http import schemas
from batchd.http.app import json_response, services_of
from batchd.http.body import bool_query
from batchd.observe.retention import disk_usage
from batchd.pool.process import WorkerState


def add_routes(app: web.Application) -> None:
    app.router.add_get("/status", status)
    app.router.add_post("/admin/prune", prune)


async def status(request: web.Request) -> web.Response:
    services = services_of(request)
    usage = await asyncio.to_thread(disk_usage, services.config.state_path)
    snapshot = services.scheduler.snapshot()
    page = schemas.StatusPage(
        version=VERSION,
        state_dir=str(services.config.state_path),
        disk_usage=schemas.DiskUsage(**usage),
        max_workers=snapshot.max_workers,
        gpus=list(snapshot.gpus),
        active_jobs=list(snapshot.active_jobs),
        workers=[
            schemas.DaemonWorker(
                job_id=w.job_id,
                slot=w.slot,
                pid=w.pid,
                state=WorkerState(w.state),
                gpus=list(w.gpus),
            )
            for w in snapshot.workers
        ],
    )
    return json_response(page.body())


async def prune(request: web.Request) -> web.Response:
    services = services_of(request)
    report = await services.pruner.prune(dry_run=bool_query(request, "dryRun"))
    return json_response(schemas.PruneReport(**dataclasses.asdict(report)).body())
