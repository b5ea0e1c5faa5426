"""/apis: deploy, list, inspect and delete Handler projects."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from aiohttp import web

from batchd.apis.registry import Deployment
from batchd.errors import DomainError
from batchd.http import schemas
from batchd.http.app import json_response, services_of
from batchd.http.body import ARCHIVE_CONTENT_TYPES, bool_query, read_body, require_content_type
from batchd.http.errors import error_body, status_of
from batchd.store.records import ApiRecord
from batchd.store.views import iso_time

log = logging.getLogger("batchd.http")

# A deploy that asks for it (Accept) is answered 200 at once with pip's progress, one JSON
# line each ({"progress": ...}), and its outcome last ({"status", and "result" or "error"}).
PROGRESS_TYPE = "application/x-ndjson"
# Lines a slow client has not taken yet; past it, lines are dropped, never the deploy held.
PROGRESS_BACKLOG = 256


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
            type=handler.get("type", "python"),
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


async def deploy(request: web.Request) -> web.StreamResponse:
    services = services_of(request)
    require_content_type(request, ARCHIVE_CONTENT_TYPES)
    config = services.config
    check = bool_query(request, "check", default=True)
    archive = await read_body(request, config.max_request_size, config.request_read_timeout)
    options: dict[str, Any] = {
        "check": check,
        "config": request.query.get("config"),
        "name": request.query.get("name"),
    }
    if PROGRESS_TYPE in request.headers.get("Accept", ""):
        return await _deploy_with_progress(request, archive, options)
    deployments = await services.registry.deploy(archive, **options)
    status, body = _deployed(deployments)
    return json_response(body, status=status)


def _deployed(deployments: list[Deployment]) -> tuple[int, dict[str, object]]:
    """The status and answer of a deploy: one API answers as it always has, a file of
    several answers {"apis": [...]}."""
    answers = [
        schemas.Deployed(
            **dict(api_summary(d.record)), unchanged=not d.new, warnings=list(d.warnings)
        )
        for d in deployments
    ]
    body = answers[0].body() if len(answers) == 1 else schemas.DeployedApis(apis=answers).body()
    return (201 if any(d.new for d in deployments) else 200), body


async def _deploy_with_progress(
    request: web.Request, archive: bytes, options: dict[str, Any]
) -> web.StreamResponse:
    lines: asyncio.Queue[str] = asyncio.Queue(PROGRESS_BACKLOG)

    def progress(line: str) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            lines.put_nowait(line)

    registry = services_of(request).registry
    deploying = asyncio.ensure_future(registry.deploy(archive, progress=progress, **options))
    response = web.StreamResponse(headers={"Content-Type": PROGRESS_TYPE})
    relay = asyncio.ensure_future(_relay(request, response, lines))
    try:
        # Shielded: a client that goes away does not cut a venv's build short.
        status, body = _deployed(await asyncio.shield(deploying))
        outcome: dict[str, object] = {"status": status, "result": body}
    except DomainError as exc:
        outcome = {"status": status_of(exc), **error_body(exc.message, exc.field)}
    except Exception:
        log.exception("unhandled error", extra={"path": request.path, "method": "POST"})
        outcome = {"status": 500, **error_body("internal error; see the daemon log")}
    finally:
        relay.cancel()
    with contextlib.suppress(asyncio.CancelledError, ConnectionError):
        await relay
    with contextlib.suppress(ConnectionError):
        if not response.prepared:
            await response.prepare(request)
        while not lines.empty():
            await response.write(_line({"progress": lines.get_nowait()}))
        await response.write(_line(outcome))
        await response.write_eof()
    return response


async def _relay(
    request: web.Request, response: web.StreamResponse, lines: asyncio.Queue[str]
) -> None:
    """Progress lines to the client as they come; a client gone ends only this."""
    with contextlib.suppress(ConnectionError):
        await response.prepare(request)
        while True:
            await response.write(_line({"progress": await lines.get()}))


def _line(record: dict[str, object]) -> bytes:
    return json.dumps(record).encode() + b"\n"


async def list_apis(request: web.Request) -> web.Response:
    apis = await services_of(request).store.list_apis()
    return json_response(schemas.ApiList(apis=[api_summary(api) for api in apis]).body())


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
    return json_response(detail.body())


async def delete_api(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    stopped = await services_of(request).admission.delete_api(name)
    deleted = schemas.DeletedApi(message=f"deleted API {name}", stopped_jobs=stopped)
    return json_response(deleted.body())
