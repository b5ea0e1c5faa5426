"""The one place a refusal becomes an HTTP status code, and the one shape of an error body.

The core raises :class:`batchd.errors.DomainError` kinds, which know no HTTP; the error
middleware (:mod:`batchd.http.app`) answers them with the status :func:`status_of` gives.
:class:`HttpError` is for what only HTTP can get wrong (a content type, a body that never
arrived), so it carries its status itself. Standard library only, like :mod:`batchd.errors`:
the client maps a refusal of its own (a project it will not upload) with it.
"""

from __future__ import annotations

import math

from batchd.errors import (
    BadRequest,
    Conflict,
    DomainError,
    Forbidden,
    Gone,
    Invalid,
    NotFound,
    TooLarge,
)

STATUS_CODES: dict[type[DomainError], int] = {
    BadRequest: 400,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    Gone: 410,
    TooLarge: 413,
    Invalid: 422,
}
# A bare DomainError names no kind: a bug, answered like any other.
_UNKNOWN_KIND = 500


class HttpError(Exception):
    """A refusal about the HTTP request itself, with its status code."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


def status_of(error: DomainError) -> int:
    for kind in type(error).__mro__:
        status = STATUS_CODES.get(kind)
        if status is not None:
            return status
    return _UNKNOWN_KIND


def error_body(message: str, field: str | None = None) -> dict[str, object]:
    """``{"error": {"message": ..., "field": ...}}``; ``field`` only when there is one."""
    detail: dict[str, object] = {"message": message}
    if field is not None:
        detail["field"] = field
    return {"error": detail}


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` header's value: whole seconds, at least one."""
    return str(max(1, math.ceil(seconds)))
