"""``GET /metrics``: Prometheus text exposition of the daemon's metrics (batchd/metrics.py).

It sits behind the token like every other GET: the read-only token is enough."""

from __future__ import annotations

from aiohttp import web

from batchd.http.app import services_of
from batchd.observe.metrics import CONTENT_TYPE

PATH = "/metrics"


def add_routes(app: web.Application) -> None:
    app.router.add_get(PATH, metrics)


async def metrics(request: web.Request) -> web.Response:
    services = services_of(request)
    body = await services.metrics.exposition(
        services.store, services.scheduler.snapshot, services.config.state_path
    )
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
