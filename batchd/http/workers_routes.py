"""``GET /workers``: live workers with their resource use, and the last worker exits."""

from __future__ import annotations

import dataclasses

from aiohttp import web

from batchd.http import schemas
from batchd.http.app import json_response, services_of
from batchd.observe.workers import GpuMemory, UsageSampler
from batchd.store.views import iso_time

USAGE = web.AppKey("worker_usage", UsageSampler)
GPU_MEMORY = web.AppKey("worker_gpu_memory", GpuMemory)


def add_routes(app: web.Application) -> None:
    app[USAGE] = UsageSampler()
    app[GPU_MEMORY] = GpuMemory()
    app.router.add_get("/workers", workers)


async def workers(request: web.Request) -> web.Response:
    services = services_of(request)
    scheduler = services.scheduler
    live = scheduler.live_workers()
    pids = [worker.pid for worker in live]
    usage = request.app[USAGE].sample(pids)
    gpu_memory = await request.app[GPU_MEMORY].by_worker(services.config.nvidia_smi, pids)
    page = schemas.WorkersPage(
        workers=[
            schemas.LiveWorker(
                **{
                    **dataclasses.asdict(worker),
                    "gpus": list(worker.gpus),
                    "started_at": iso_time(worker.started_at),
                },
                rss_bytes=usage[worker.pid].rss_bytes if worker.pid in usage else None,
                cpu_percent=usage[worker.pid].cpu_percent if worker.pid in usage else None,
                gpu_memory_bytes=None if gpu_memory is None else gpu_memory.get(worker.pid),
            )
            for worker in live
        ],
        events=[
            schemas.WorkerExit(**{**dataclasses.asdict(event), "time": iso_time(event.time)})
            for event in scheduler.worker_history.newest_first()
        ],
    )
    return json_response(page.body())
