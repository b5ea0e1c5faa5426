"""Bearer-token authentication: a full token, and optionally a read-only one (GET only)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware

from batchd.config import ConfigError, DaemonConfig
from batchd.http.app import Handler, error_response
from batchd.http.ui_routes import is_public

# The OpenAPI document holds no state: tools may fetch it without a token.
OPEN_PATHS = frozenset({"/healthz", "/openapi.json"})
READ_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class Tokens:
    full: bytes | None
    read_only: bytes | None

    @property
    def required(self) -> bool:
        return self.full is not None or self.read_only is not None


def read_token(path: str | None, key: str) -> bytes | None:
    if path is None:
        return None
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from exc
    if len(token) < 16:
        raise ConfigError(f"{key}: the token in {path} is shorter than 16 characters")
    return token.encode()


def load_tokens(config: DaemonConfig) -> Tokens:
    return Tokens(
        full=read_token(config.token_file, "token_file"),
        read_only=read_token(config.read_only_token_file, "read_only_token_file"),
    )


def _matches(given: bytes, expected: bytes | None) -> bool:
    # Constant time, so the comparison leaks nothing about how much of a guess was right.
    return expected is not None and hmac.compare_digest(given, expected)


def auth_middleware(tokens: Tokens) -> Middleware:
    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        # The dashboard's static files hold no data; its data calls carry the token.
        if request.path in OPEN_PATHS or is_public(request.path):
            return await handler(request)
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # aiohttp keeps header bytes that are not UTF-8 as surrogates: they turn back into
        # those bytes here, which no token (UTF-8 text) can equal.
        token = given.strip().encode("utf-8", "surrogateescape")
        if scheme.lower() == "bearer" and _matches(token, tokens.full):
            return await handler(request)
        if scheme.lower() == "bearer" and _matches(token, tokens.read_only):
            if request.method in READ_METHODS:
                return await handler(request)
            return error_response(403, "the read-only token may only read (GET)")
        response = error_response(401, "missing or wrong bearer token (Authorization header)")
        response.headers["WWW-Authenticate"] = 'Bearer realm="batchd"'
        return response

    return authenticate
