"""The aiohttp application: state on typed keys, one error shape everywhere."""

from __future__ import annotations

import errno
import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Middleware

from batchd.admission.service import Admission
from batchd.apis.registry import ApiRegistry
from batchd.config import DaemonConfig
from batchd.errors import DomainError
from batchd.http.errors import HttpError, error_body, retry_after, status_of
from batchd.observe.joblogs import JobLogs
from batchd.observe.metrics import Metrics
from batchd.observe.retention import Pruner
from batchd.scheduler.core import Scheduler
from batchd.store import DatabaseUnavailable
from batchd.store.roles import Store

if TYPE_CHECKING:
    from batchd.http.auth import Tokens

log = logging.getLogger("batchd.http")


@dataclass(frozen=True)
class Services:
    config: DaemonConfig
    store: Store
    registry: ApiRegistry
    scheduler: Scheduler
    joblogs: JobLogs
    pruner: Pruner
    metrics: Metrics = field(default_factory=Metrics)
    admission: Admission = field(init=False)

    def __post_init__(self) -> None:
        admission = Admission(self.config, self.store, self.registry, self.scheduler, self.metrics)
        # Frozen: the one field built from the others is set once, here.
        object.__setattr__(self, "admission", admission)


SERVICES = web.AppKey("services", Services)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json_line(data: object) -> str:
    # Encoded once, newline included, so `curl` leaves the shell prompt on a line of its own.
    return json.dumps(data) + "\n"


def json_response(data: object, status: int = 200) -> web.Response:
    """Every JSON answer of the API: ``web.json_response`` is banned (ruff TID251) so that
    none goes out without its final newline."""
    return web.json_response(data, status=status, dumps=_json_line)  # noqa: TID251


def error_response(status: int, message: str, field: str | None = None) -> web.Response:
    return json_response(error_body(message, field), status=status)


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except DomainError as exc:
        return error_response(status_of(exc), exc.message, exc.field)
    except HttpError as exc:
        return error_response(exc.status, exc.message, exc.field)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.text if exc.text and exc.content_type == "text/plain" else exc.reason
        response = error_response(exc.status, message or exc.reason)
        for header in ("Allow",):
            if header in exc.headers:
                response.headers[header] = exc.headers[header]
        return response
    except DatabaseUnavailable as exc:
        if request.writer.output_size and request.transport is not None:
            # A stream under way: too late for a status. Cut, the client sees it end
            # short (no last chunk) instead of a second response inside it.
            request.transport.close()
        # The store logs an outage once; what it says names the server, which is not
        # the client's business.
        response = error_response(503, "the queue's database is unavailable; retry shortly")
        response.headers["Retry-After"] = retry_after(exc.retry_after)
        return response
    except sqlite3.OperationalError as exc:
        return _storage_error(request, exc, getattr(exc, "sqlite_errorname", ""))
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            log.exception("unhandled error", extra={"path": request.path})
            return error_response(500, "internal error; see the daemon log")
        return _storage_error(request, exc, "SQLITE_FULL")
    except Exception:
        log.exception("unhandled error", extra={"path": request.path, "method": request.method})
        return error_response(500, "internal error; see the daemon log")


def _storage_error(request: web.Request, exc: Exception, code: str) -> web.Response:
    """The disk or the database, not the client: the daemon keeps running and retries."""
    log.error("storage error", extra={"path": request.path, "error": str(exc), "code": code})
    if code == "SQLITE_FULL":
        return error_response(507, "the disk holding batchd's state is full; nothing was stored")
    response = error_response(503, f"the queue is busy or unavailable ({exc}); retry shortly")
    response.headers["Retry-After"] = "1"
    return response


def build_app(services: Services, tokens: Tokens | None = None) -> web.Application:
    from batchd.http import (
        admin_routes,
        apis_routes,
        history_routes,
        jobs_routes,
        metrics_routes,
        openapi,
        ui_routes,
        workers_routes,
    )
    from batchd.http.auth import auth_middleware

    middlewares: list[Middleware] = [errors_as_json]
    if tokens is not None and tokens.required:
        middlewares.append(auth_middleware(tokens))
    app = web.Application(client_max_size=services.config.max_request_size, middlewares=middlewares)
    app[SERVICES] = services
    app.router.add_get("/healthz", healthz)
    app.router.add_get(openapi.PATH, openapi.serve)
    admin_routes.add_routes(app)
    apis_routes.add_routes(app)
    jobs_routes.add_routes(app)
    history_routes.add_routes(app)
    metrics_routes.add_routes(app)
    ui_routes.add_routes(app)
    workers_routes.add_routes(app)
    return app


async def healthz(request: web.Request) -> web.Response:
    """200 while the daemon can serve: its queue's database answers (else 503, by the
    error middleware, so a load balancer sends its requests elsewhere)."""
    await services_of(request).store.ping()
    return json_response({"status": "ok"})


def services_of(request: web.Request) -> Services:
    return request.app[SERVICES]
