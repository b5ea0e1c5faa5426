"""The open-file limit, and how many HTTP connections fit under it."""

from __future__ import annotations

import logging
import resource

log = logging.getLogger("batchd.daemon")

# Descriptors kept for everything but HTTP connections: SQLite, logs, the listening socket,
# GPU libraries; and per worker its socket pair, log pipe and progress memory.
FDS_RESERVED = 256
FDS_PER_WORKER = 8
# However low the limit, this many connections are allowed.
MIN_CONNECTIONS = 16
# The soft limit asked for when the hard limit is unlimited.
UNLIMITED_TARGET = 1 << 20


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (allowed unprivileged); the new soft."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = UNLIMITED_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit", extra={"error": str(exc)})
    return soft


def connection_cap(max_connections: int, max_workers: int, open_files: int) -> int:
    """`max_connections`, lowered to what `open_files` leaves after the daemon's own."""
    room = open_files - FDS_RESERVED - FDS_PER_WORKER * max_workers
    cap = min(max_connections, max(room, MIN_CONNECTIONS))
    if cap < max_connections:
        log.warning(
            "max_connections lowered to fit the open-file limit",
            extra={"max_connections": max_connections, "cap": cap, "open_files": open_files},
        )
    return cap
