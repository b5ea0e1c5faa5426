"""Reading request bodies and query parameters with clear errors."""

from __future__ import annotations

import asyncio

from aiohttp import web

from batchd.errors import BadRequest, TooLarge
from batchd.http.encoding import IDENTITY, BodyDecoder, content_coding
from batchd.http.errors import HttpError

# curl -d sends form encoding by default; a job body is JSON whatever the label says.
JSON_CONTENT_TYPES = frozenset(
    {"application/json", "application/x-www-form-urlencoded", "text/plain", ""}
)
ARCHIVE_CONTENT_TYPES = frozenset(
    {
        "application/gzip",
        "application/x-gzip",
        "application/x-tar",
        "application/x-gtar",
        "application/octet-stream",
        "",
    }
)


def require_content_type(request: web.Request, allowed: frozenset[str]) -> None:
    content_type = request.content_type if request.headers.get("Content-Type") else ""
    if content_type not in allowed:
        expected = ", ".join(sorted(t for t in allowed if t))
        raise HttpError(415, f"unsupported content type {content_type!r}; send one of {expected}")


async def read_body(request: web.Request, limit: int, timeout: float = 60.0) -> bytes:
    """The body, decoded (gzip, deflate), at most `limit` bytes both as sent and decoded."""
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    coding = content_coding(request.headers.get("Content-Encoding"))
    try:
        async with asyncio.timeout(timeout):
            if coding == IDENTITY:
                return await request.read()
            return await _read_decoded(request, BodyDecoder(coding), limit)
    except TimeoutError:
        raise HttpError(408, f"request body not received within {timeout:g}s") from None
    except ConnectionResetError:
        # aiohttp's "Connection lost": nobody is left to answer, and nothing was stored.
        raise BadRequest("the client closed the connection before sending the body") from None
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(limit) from None


async def _read_decoded(request: web.Request, decoder: BodyDecoder, limit: int) -> bytes:
    body = bytearray()
    received = 0
    async for chunk in request.content.iter_any():
        received += len(chunk)
        if received > limit:
            raise _too_large(limit)
        for piece in decoder.feed(chunk):
            body += piece
            if len(body) > limit:
                # Stop here: the rest of a compression bomb is never decoded.
                raise _too_large(limit)
            # Other requests run between steps of a large body.
            await asyncio.sleep(0)
    decoder.finish()
    return bytes(body)


def _too_large(limit: int) -> TooLarge:
    return TooLarge(f"request body is over the {limit} byte limit (max_request_size)")


def required_query(request: web.Request, name: str) -> str:
    value = request.query.get(name)
    if not value:
        raise BadRequest(f"query parameter {name} is required", name)
    return value


def bool_query(request: web.Request, name: str, default: bool = False) -> bool:
    value = request.query.get(name, "true" if default else "false").lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no", ""):
        return False
    raise BadRequest(f"query parameter {name} must be true or false", name)


def int_query(request: web.Request, name: str, default: int, minimum: int, maximum: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"query parameter {name} must be an integer", name) from None
    if not minimum <= value <= maximum:
        raise BadRequest(f"query parameter {name} must be in {minimum}..{maximum}", name)
    return value
