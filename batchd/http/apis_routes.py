"""/apis: deploy, list, inspect and delete Handler projects."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from batchd.http.app import services_of
from batchd.http.body import ARCHIVE_CONTENT_TYPES, read_body, require_content_type
from batchd.store.base import ApiRecord
from batchd.views import iso_time


def add_routes(app: web.Application) -> None:
    app.router.add_post("/apis", deploy)
    app.router.add_get("/apis", list_apis)
    app.router.add_get("/apis/{name}", get_api)
    app.router.add_delete("/apis/{name}", delete_api)


def api_summary(api: ApiRecord) -> dict[str, Any]:
    return {
        "name": api.name,
        "version": api.version,
        "created_at": iso_time(api.created_at),
        "endpoint": f"/batch/{api.name}",
        "handler": {key: value for key, value in api.spec["handler"].items() if key != "env"}
        | {"env": sorted(api.spec["handler"].get("env", {}))},
        "compute": api.spec["compute"],
        "retention": api.spec.get("retention"),
        "files": api.spec.get("files"),
        "size": api.spec.get("size"),
    }


async def deploy(request: web.Request) -> web.Response:
    services = services_of(request)
    require_content_type(request, ARCHIVE_CONTENT_TYPES)
    config = services.config
    archive = await read_body(request, config.max_request_size, config.request_read_timeout)
    api, new = await services.registry.deploy(archive)
    return web.json_response({**api_summary(api), "unchanged": not new}, status=201 if new else 200)


async def list_apis(request: web.Request) -> web.Response:
    apis = await services_of(request).store.list_apis()
    return web.json_response({"apis": [api_summary(api) for api in apis]})


async def get_api(request: web.Request) -> web.Response:
    services = services_of(request)
    name = request.match_info["name"]
    api = await services.registry.require(name)
    versions = await services.store.api_versions(name)
    body = api_summary(api)
    body["versions"] = [
        {"version": v.version, "created_at": iso_time(v.created_at)} for v in versions
    ]
    return web.json_response(body)


async def delete_api(request: web.Request) -> web.Response:
    services = services_of(request)
    name = request.match_info["name"]
    await services.registry.require(name)
    stopped = await services.scheduler.stop_api_jobs(name)
    await services.registry.delete(name)
    return web.json_response({"message": f"deleted API {name}", "stopped_jobs": stopped})
