"""`[compute] mem`: each worker's memory bound.

Where the daemon may create memory cgroups (cgroup v1 with a writable memory
hierarchy), each worker gets a group of its own with the limit, and the kernel's OOM
killer acts inside it; the group's own oom_kill counter then says for certain that
an OOM kill happened. Elsewhere the worker sets RLIMIT_AS on itself and exits with
WORKER_EXIT_OUT_OF_MEMORY on a MemoryError; both are reported as worker_oom.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from pathlib import Path

from batchd.constants import ENV_MEMORY_LIMIT

log = logging.getLogger("batchd.memlimit")

_V1_ROOT = Path("/sys/fs/cgroup/memory")
_RELEASE_TRIES = 250


class MemoryLimiter:
    def __init__(self, base: Path | None = None) -> None:
        self.base = base if base is not None else _writable_v1_base()

    @property
    def uses_cgroups(self) -> bool:
        return self.base is not None

    def env_for(self, limit: int | None) -> dict[str, str]:
        """What the worker needs to bound itself when no cgroup will do it."""
        if limit is None or self.uses_cgroups:
            return {}
        return {ENV_MEMORY_LIMIT: str(limit)}

    def attach(self, pid: int, limit: int | None) -> Path | None:
        if limit is None or self.base is None:
            return None
        group = self.base / f"batchd-worker-{pid}-{secrets.token_hex(2)}"
        try:
            group.mkdir()
            (group / "memory.limit_in_bytes").write_text(str(limit))
            swap = group / "memory.memsw.limit_in_bytes"
            if swap.exists():
                # Without this the kernel would swap instead of enforcing the bound.
                swap.write_text(str(limit))
            (group / "cgroup.procs").write_text(str(pid))
        except OSError as exc:
            log.warning("cannot bound worker memory with a cgroup", extra={"error": str(exc)})
            with contextlib.suppress(OSError):
                group.rmdir()
            return None
        return group

    @staticmethod
    def oom_killed(group: Path | None) -> bool:
        if group is None:
            return False
        try:
            for line in (group / "memory.oom_control").read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == "oom_kill":
                    return int(value) > 0
        except (OSError, ValueError):
            return False
        return False

    @staticmethod
    async def release(group: Path | None) -> None:
        """Remove a worker's group once it is empty (the last of its processes, the
        worker's group guard, may take a moment to go)."""
        if group is None:
            return
        for _ in range(_RELEASE_TRIES):
            try:
                if not (group / "cgroup.procs").read_text().split():
                    group.rmdir()
                    return
            except FileNotFoundError:
                return
            except OSError:
                pass
            await asyncio.sleep(0.02)
        log.warning("memory cgroup still busy; left in place", extra={"cgroup": str(group)})


def _writable_v1_base() -> Path | None:
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "memory" in controllers.split(","):
                base = _V1_ROOT / path.lstrip("/")
                return base if os.access(base, os.W_OK) else None
    except (OSError, ValueError):
        return None
    return None
