"""Cortex's client exceptions (``cortex.exceptions``), with the same names and bases."""

from __future__ import annotations

from batchd.client import BatchdError


class CortexException(Exception):
    """Base class of the client's errors."""


class CortexBinaryException(CortexException, BatchdError):
    """A call the daemon refused or could not answer (Cortex: the CLI failed). It is also
    a ``batchd.client.BatchdError``: ``status``, ``message`` and ``field`` are set."""


class NotFound(CortexException):
    """A resource or name that does not exist."""


class InvalidKindForMethod(CortexException):
    """An API kind the method does not take (batchd has only BatchAPI)."""
