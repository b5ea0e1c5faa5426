"""The dashboard: plain static files (HTML, JS, CSS) from ``batchd/ui``, served at ``/`` and
``/ui/``.

The files hold no data, so they need no token (see ``auth.py``). Every call the page makes
for data goes through the JSON API with the bearer token the user typed in. The files are
read once, when the app is built, from a fixed list: no request path ever reaches the file
system.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

from batchd.errors import NotFound

log = logging.getLogger("batchd.http")

UI_PREFIX = "/ui/"
INDEX = "index.html"

_CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}

# The page talks to this daemon only, runs only its own script, and may not be framed.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


UI_ASSETS = web.AppKey("ui_assets", dict[str, Asset])


def is_public(path: str) -> bool:
    """The dashboard's own paths: readable without a token."""
    return path in ("/", "/ui") or path.startswith(UI_PREFIX)


def load_assets() -> dict[str, Asset]:
    assets: dict[str, Asset] = {}
    try:
        entries = list(resources.files("batchd").joinpath("ui").iterdir())
    except (FileNotFoundError, NotADirectoryError):
        log.warning("the dashboard's files are missing from this install (batchd/ui)")
        return assets
    for entry in entries:
        suffix = entry.name[entry.name.rfind(".") :] if "." in entry.name else ""
        if not entry.is_file() or suffix not in _CONTENT_TYPES:
            continue
        body = entry.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        assets[entry.name] = Asset(body, _CONTENT_TYPES[suffix], etag)
    return assets


def add_routes(app: web.Application) -> None:
    app[UI_ASSETS] = load_assets()
    app.router.add_get("/", index)
    app.router.add_get("/ui", to_index)
    app.router.add_get("/ui/", index)
    app.router.add_get("/ui/{name}", asset)


async def to_index(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/ui/")


async def index(request: web.Request) -> web.StreamResponse:
    return _serve(request, INDEX)


async def asset(request: web.Request) -> web.StreamResponse:
    return _serve(request, request.match_info["name"])


def _serve(request: web.Request, name: str) -> web.StreamResponse:
    found = request.app[UI_ASSETS].get(name)
    if found is None:
        raise NotFound(f"the dashboard has no file {name[:64]!r}")
    headers = {
        "ETag": found.etag,
        # Revalidated on every load, so an upgraded daemon's page is never mixed with an
        # old script; a 304 costs one round trip.
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    }
    if found.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(
        body=found.body, content_type=found.content_type, charset="utf-8", headers=headers
    )
