"""The one error type every client mistake goes through.

The HTTP layer turns it into ``{"error": {"message": ..., "field": ...}}`` with its
status code; nothing else in the daemon decides how errors look on the wire.
"""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field

    def to_json(self) -> dict[str, object]:
        body: dict[str, object] = {"message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return {"error": body}


def bad_request(message: str, field: str | None = None) -> ApiError:
    return ApiError(400, message, field)


def not_found(message: str, field: str | None = None) -> ApiError:
    return ApiError(404, message, field)


def conflict(message: str, field: str | None = None) -> ApiError:
    return ApiError(409, message, field)


def too_large(message: str, field: str | None = None) -> ApiError:
    return ApiError(413, message, field)


def invalid(message: str, field: str | None = None) -> ApiError:
    return ApiError(422, message, field)


def forbidden(message: str, field: str | None = None) -> ApiError:
    return ApiError(403, message, field)
