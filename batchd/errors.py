"""What the core raises when it refuses a request: a kind of refusal, a message, a field.

None of these knows HTTP. :mod:`batchd.http.errors` is the one place that maps each kind to
a status code, and the HTTP layer turns it into ``{"error": {"message": ..., "field": ...}}``.
``field`` names the offending part of the request (``item_list.batch_size``, ``jobID``),
because that is what users see. Standard library only: the client imports it too.
"""

from __future__ import annotations


class DomainError(Exception):
    """A request the daemon refuses; raise one of the kinds below, never this base."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class BadRequest(DomainError):
    """The request cannot be read: a body that is no JSON object, a bad query parameter."""


class Forbidden(DomainError):
    """Not allowed here: a path outside ``input_roots``, or local files turned off."""


class NotFound(DomainError):
    """No such API, job or file."""


class Conflict(DomainError):
    """The thing is not in a state that allows it: the job has ended, nothing to retry."""


class Gone(DomainError):
    """It existed, and was pruned (``retention_days``)."""


class TooLarge(DomainError):
    """Over a limit: the body, the project, one batch, the number of batches."""


class Invalid(DomainError):
    """Well-formed, but wrong: a field's value, a project's spec, an item."""
