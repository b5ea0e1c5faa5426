"""`[compute] mem`: each worker's memory bound, by the best means this machine offers.

1. cgroup v2, delegated (systemd's Delegate=yes): each worker gets a group of its own
   with memory.max, made before it starts (batchd/cgroups.py). The group's
   memory.events says for certain whether the OOM killer struck, and cgroup.kill ends
   whatever the worker left behind.
2. cgroup v1 with a writable memory hierarchy: a group with memory.limit_in_bytes per
   worker that has a bound, the kernel's OOM killer acting inside it.
3. Neither: the worker sets RLIMIT_AS on itself and exits with
   WORKER_EXIT_OUT_OF_MEMORY on a MemoryError.

All three are reported as worker_oom.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from batchd.constants import (
    CGROUP_EMPTY_POLL_SECONDS,
    CGROUP_EMPTY_TIMEOUT_SECONDS,
    ENV_CGROUP,
    ENV_MEMORY_LIMIT,
)
from batchd.pool import cgroups

log = logging.getLogger("batchd.memlimit")

_V1_ROOT = Path("/sys/fs/cgroup/memory")
# A worker's v1 group is <prefix><worker pid>-<random>.
V1_GROUP_PREFIX = "batchd-worker-"
_RELEASE_TRIES = 250

MODE_V2 = "cgroup v2"
MODE_V1 = "cgroup v1"
MODE_NONE = "none"


@dataclass(frozen=True)
class Choice:
    """Which means bounds workers' memory here (`mode`), and why."""

    mode: str
    reason: str
    v1_base: Path | None = None
    v2_base: Path | None = None

    def describe(self) -> str:
        if self.mode == MODE_NONE:
            return f"none (RLIMIT_AS in each worker): {self.reason}"
        return f"{self.mode} ({self.reason})"


def choose() -> Choice:
    """Reads only; `MemoryLimiter.for_daemon` acts on the choice."""
    v2 = cgroups.detect()
    if v2.base is not None:
        return Choice(MODE_V2, v2.reason, v2_base=v2.base)
    v1 = _writable_v1_base()
    if v1 is not None:
        return Choice(MODE_V1, f"{v1}; cgroup v2 unused: {v2.reason}", v1_base=v1)
    return Choice(MODE_NONE, f"cgroup v2: {v2.reason}; cgroup v1: {_v1_unusable()}")


class MemoryLimiter:
    """`MemoryLimiter()` looks at cgroup v1 only and changes nothing; the daemon uses
    `for_daemon()`, which takes cgroup v2 where it is delegated.

    Per worker: `prepare` (before the spawn), `env_for`, `attach` (right after it),
    then `oom_killed` and `release` when it has ended."""

    def __init__(
        self,
        base: Path | None = None,
        v2: cgroups.WorkerCgroups | None = None,
        choice: Choice | None = None,
    ) -> None:
        self.v2 = v2
        self.base = base if base is not None or v2 is not None else _writable_v1_base()
        if choice is None:
            mode = MODE_V2 if v2 else MODE_V1 if self.base else MODE_NONE
            choice = Choice(mode, "set up by the caller")
        self.choice = choice

    @classmethod
    def for_daemon(cls) -> MemoryLimiter:
        """The daemon's limiter: under cgroup v2 this moves the daemon into its leaf
        group (see batchd/cgroups.py); where that fails, the v1 or RLIMIT_AS way."""
        choice = choose()
        if choice.v2_base is not None:
            tree = cgroups.WorkerCgroups(choice.v2_base)
            try:
                tree.setup()
                return cls(v2=tree, choice=choice)
            except OSError as exc:
                reason = f"cannot build worker groups in {choice.v2_base}: {exc}"
                log.warning("cgroup v2 unusable", extra={"error": reason})
                v1 = _writable_v1_base()
                mode = MODE_V1 if v1 else MODE_NONE
                choice = Choice(mode, reason, v1_base=v1)
        if choice.v1_base is not None:
            _remove_orphaned_v1_groups(choice.v1_base)
        return cls(base=choice.v1_base, choice=choice)

    @property
    def uses_cgroups(self) -> bool:
        return self.v2 is not None or self.base is not None

    def prepare(self, limit: int | None) -> Path | None:
        """cgroup v2: the worker's group, made (with its bound) before the worker
        starts; every worker gets one, bounded or not, so nothing it starts outlives it."""
        if self.v2 is None:
            return None
        try:
            return self.v2.create(limit)
        except OSError as exc:
            log.warning("cannot make a worker cgroup", extra={"error": str(exc)})
            return None

    def env_for(self, limit: int | None, group: Path | None = None) -> dict[str, str]:
        """What the worker needs: the group to join, or its own bound when no cgroup
        will enforce one."""
        if group is not None:
            return {ENV_CGROUP: str(group)}
        if limit is None or self.uses_cgroups:
            return {}
        return {ENV_MEMORY_LIMIT: str(limit)}

    def attach(self, pid: int, limit: int | None, group: Path | None = None) -> Path | None:
        if self.v2 is not None:
            return self._attach_v2(pid, group)
        if limit is None or self.base is None:
            return None
        group = self.base / f"{V1_GROUP_PREFIX}{pid}-{secrets.token_hex(2)}"
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

    def _attach_v2(self, pid: int, group: Path | None) -> Path | None:
        if group is None:
            return None
        try:
            # The worker joins by itself before it forks; this makes sure of it.
            cgroups.WorkerCgroups.attach(group, pid)
        except OSError as exc:
            if not isinstance(exc, ProcessLookupError):
                log.warning("cannot move a worker into its cgroup", extra={"error": str(exc)})
        return group

    def oom_killed(self, group: Path | None) -> bool | None:
        """True if the OOM killer struck in the worker's group; None where the group
        cannot tell (no group, or cgroup v1 without a kill: the caller decides)."""
        if group is None:
            return None
        if self.v2 is not None:
            kills = cgroups.WorkerCgroups.oom_kills(group)
            return None if kills is None else kills > 0
        try:
            for line in (group / "memory.oom_control").read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == "oom_kill":
                    return True if int(value) > 0 else None
        except (OSError, ValueError):
            return None
        return None

    def kill_leftovers(self, group: Path | None) -> None:
        """Once the worker has exited: kill whatever is still in its cgroup v2 group, so
        that nothing it started outlives it (nor keeps its output pipes open)."""
        if group is None or self.v2 is None:
            return
        try:
            cgroups.WorkerCgroups.kill(group)
        except OSError as exc:
            log.warning("cannot kill what is left in a worker cgroup", extra={"error": str(exc)})

    async def release(self, group: Path | None) -> None:
        """Remove a worker's group once it is empty (the last of its processes, the
        worker's group guard, may take a moment to go). Under cgroup v2 whatever is
        still in it, such as a daemon a handler started with setsid, is killed first."""
        if group is None:
            return
        if self.v2 is not None:
            await _release_v2(group)
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


async def _release_v2(group: Path) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CGROUP_EMPTY_TIMEOUT_SECONDS
    while not cgroups.try_remove(group):
        if loop.time() >= deadline:
            log.warning("worker cgroup still busy; left in place", extra={"cgroup": str(group)})
            return
        await asyncio.sleep(CGROUP_EMPTY_POLL_SECONDS)


def _remove_orphaned_v1_groups(base: Path) -> None:
    """Empty worker groups whose worker is gone: a daemon killed with -9 never removed
    them, and no other daemon would. A group still in use keeps a live worker (its pid is
    in its name), and rmdir refuses a group with a process in it anyway."""
    for group in base.glob(f"{V1_GROUP_PREFIX}*"):
        pid = group.name.removeprefix(V1_GROUP_PREFIX).partition("-")[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            with contextlib.suppress(OSError):
                group.rmdir()
                log.info("removed an orphaned worker cgroup", extra={"cgroup": str(group)})


def _v1_unusable() -> str:
    own = _v1_group()
    if own is None:
        return "no memory controller mounted on v1"
    return f"{_V1_ROOT / own.lstrip('/')} is not writable by uid {os.geteuid()}"


def _v1_group() -> str | None:
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "memory" in controllers.split(","):
                return path
    except (OSError, ValueError):
        return None
    return None


def _writable_v1_base() -> Path | None:
    own = _v1_group()
    if own is None:
        return None
    base = _V1_ROOT / own.lstrip("/")
    return base if os.access(base, os.W_OK) else None
