"""/apis: deploy, list, inspect and delete Handler projects."""

from __future__ import annotations

from aiohttp import web

from batchd.http import schemas
from batchd.http.app import services_of
from batchd.http.body import ARCHIVE_CONTENT_TYPES, bool_query, read_body, require_content_type
from batchd.store.records import ApiRecord
from batchd.store.views import iso_time


def add_routes(app: web.Application) -> None:
    app.router.add_post("/apis", deploy)
    app.router.add_get("/apis", list_apis)
    app.router.add_get("/apis/{name}", get_api)
    app.router.add_delete("/apis/{name}", delete_api)


def api_summary(api: ApiRecord) -> schemas.ApiSummary:
    handler = api.spec["handler"]
    compute = api.spec["compute"]
    retention = api.spec.get("retention")
    return schemas.ApiSummary(
        name=api.name,
        version=api.version,
        created_at=_time(api.created_at),
        endpoint=f"/batch/{api.name}",
        handler=schemas.HandlerSummary(
            path=handler["path"],
            batch_timeout=handler.get("batch_timeout"),
            config=handler.get("config", {}),
            python=handler.get("python"),
            # Names only: values may be secrets.
            env=sorted(handler.get("env", {})),
        ),
        compute=schemas.ComputeSummary(
            gpu=compute.get("gpu", 0), mem=compute.get("mem"), disk=compute.get("disk")
        ),
        retention=None if retention is None else schemas.RetentionSummary(days=retention["days"]),
        files=api.spec.get("files"),
        size=api.spec.get("size"),
    )


def _time(epoch: float) -> str:
    text = iso_time(epoch)
    assert text is not None
    return text


async def deploy(request: web.Request) -> web.Response:
    services = services_of(request)
    require_content_type(request, ARCHIVE_CONTENT_TYPES)
    config = services.config
    check = bool_query(request, "check", default=True)
    archive = await read_body(request, config.max_request_size, config.request_read_timeout)
    deployments = await services.registry.deploy(
        archive,
        check=check,
        config=request.query.get("config"),
        name=request.query.get("name"),
    )
    answers = [
        schemas.Deployed(
            **dict(api_summary(d.record)), unchanged=not d.new, warnings=list(d.warnings)
        )
        for d in deployments
    ]
    # One API answers as it always has; a file of several answers {"apis": [...]}.
    body = answers[0].body() if len(answers) == 1 else schemas.DeployedApis(apis=answers).body()
    return web.json_response(body, status=201 if any(d.new for d in deployments) else 200)


async def list_apis(request: web.Request) -> web.Response:
    apis = await services_of(request).store.list_apis()
    return web.json_response(schemas.ApiList(apis=[api_summary(api) for api in apis]).body())


async def get_api(request: web.Request) -> web.Response:
    services = services_of(request)
    name = request.match_info["name"]
    api = await services.registry.require(name)
    versions = await services.store.api_versions(name)
    detail = schemas.ApiDetail(
        **dict(api_summary(api)),
        versions=[
            schemas.ApiVersion(version=v.version, created_at=_time(v.created_at)) for v in versions
        ],
    )
    return web.json_response(detail.body())


async def delete_api(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    stopped = await services_of(request).admission.delete_api(name)
    deleted = schemas.DeletedApi(message=f"deleted API {name}", stopped_jobs=stopped)
    return web.json_response(deleted.body())
