"""Worker cgroups on cgroup v2, inside the cgroup systemd delegates to the daemon.

Under a unit with ``Delegate=yes`` the daemon owns its cgroup (``.../batchd.service``)
and may build a tree below it. cgroup v2 forbids processes in a group whose children
get controllers ("no internal processes"), so the tree is:

    <service>/daemon          the daemon itself (and the spare worker, until adopted)
    <service>/workers/<name>  one per worker: memory.max = [compute] mem

A worker's group is made before the worker starts, with its limit already set; the
worker joins it first thing (``BATCHD_CGROUP``), before it forks anything, and the
daemon writes its pid there too right after the spawn. When the worker ends, its
group's ``memory.events`` says whether the OOM killer struck, ``cgroup.kill`` ends
whatever escaped the worker's process group (a ``setsid`` daemon), and the group is
removed.

Nothing here is used unless the cgroup is delegated (systemd's ``user.delegate`` or
``trusted.delegate`` mark, or a cgroup handed to our non-root uid) and writable;
``detect`` says why not otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from batchd.constants import (
    CGROUP_EMPTY_POLL_SECONDS,
    CGROUP_EMPTY_TIMEOUT_SECONDS,
)

DAEMON_LEAF = "daemon"
WORKERS = "workers"
_DELEGATE_XATTRS = ("trusted.delegate", "user.delegate")
_CONTROL_FILES = ("cgroup.procs", "cgroup.subtree_control")
_SETUP_ATTEMPTS = 3


@dataclass(frozen=True)
class Detection:
    """Where worker groups can go (`base`, our delegated cgroup), or why not (`reason`)."""

    base: Path | None
    reason: str


def v2_mount(mounts: Path = Path("/proc/self/mounts")) -> Path | None:
    """The cgroup2 mount point: /sys/fs/cgroup on a unified layout, .../unified on a
    hybrid one (where the memory controller stays on v1)."""
    try:
        for line in mounts.read_text().splitlines():
            fields = line.split()
            if len(fields) > 2 and fields[2] == "cgroup2":
                return Path(fields[1])
    except OSError:
        return None
    return None


def own_cgroup(proc: Path = Path("/proc/self/cgroup")) -> str | None:
    """This process's cgroup v2 path ("0::/system.slice/batchd.service")."""
    try:
        for line in proc.read_text().splitlines():
            if line.startswith("0::"):
                return line[3:]
    except OSError:
        return None
    return None


def detect(mount: Path | None = None, cgroup: str | None = None) -> Detection:
    """Whether this process may give workers cgroup v2 groups with a memory limit.
    Reads only: nothing moves until `WorkerCgroups.setup`."""
    mount = mount if mount is not None else v2_mount()
    if mount is None:
        return Detection(None, "no cgroup v2 hierarchy is mounted")
    cgroup = cgroup if cgroup is not None else own_cgroup()
    if cgroup is None:
        return Detection(None, "this process is in no cgroup v2 group (/proc/self/cgroup)")
    base = mount / cgroup.lstrip("/")
    if base.name == DAEMON_LEAF and (base.parent / WORKERS).is_dir():
        # Started again from the leaf an earlier daemon moved itself (and its shell) into.
        base = base.parent
    try:
        available = (base / "cgroup.controllers").read_text().split()
    except OSError as exc:
        return Detection(None, f"cannot read {base}/cgroup.controllers: {exc.strerror}")
    if "memory" not in available:
        where = "hybrid layout: memory is on cgroup v1" if mount.name == "unified" else ""
        return Detection(
            None,
            f"the memory controller is not available in {base}"
            + (f" ({where})" if where else " (not delegated with it)"),
        )
    if not delegated(base):
        return Detection(
            None,
            f"{base} is not delegated to this process "
            "(run under the batchd.service unit, which sets Delegate=yes)",
        )
    if os.statvfs(base).f_flag & os.ST_RDONLY:
        return Detection(
            None, f"{base} is read-only here (the unit must not set ProtectControlGroups=yes)"
        )
    unwritable = [name for name in _CONTROL_FILES if not os.access(base / name, os.W_OK)]
    if unwritable or not os.access(base, os.W_OK):
        return Detection(None, f"{base} is not writable by uid {os.geteuid()}")
    return Detection(base, f"delegated: {base}")


def delegated(base: Path) -> bool:
    """systemd marks a delegated cgroup with an xattr (v251+ also the unprivileged
    user.delegate); before that, the sign is the group chowned to our non-root uid."""
    for name in _DELEGATE_XATTRS:
        with contextlib.suppress(OSError):
            if os.getxattr(base, name).strip() == b"1":
                return True
    uid = os.geteuid()
    try:
        return uid != 0 and base.stat().st_uid == uid
    except OSError:
        return False


class WorkerCgroups:
    """The daemon's tree under its delegated cgroup `base`."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.workers = base / WORKERS

    def setup(self) -> None:
        """Move every process of `base` (the daemon, under systemd) into the daemon's
        leaf, hand the memory controller down, and clear groups a previous daemon left.
        Raises OSError where the tree cannot be built."""
        leaf = self.base / DAEMON_LEAF
        leaf.mkdir(exist_ok=True)
        for attempt in range(_SETUP_ATTEMPTS):
            for pid in _pids(self.base):
                with contextlib.suppress(ProcessLookupError):
                    _write(leaf / "cgroup.procs", str(pid))
            try:
                _write(self.base / "cgroup.subtree_control", "+memory")
                break
            except OSError as exc:
                # EBUSY: a process started in `base` meanwhile (a shell's child); move again.
                if exc.errno != errno.EBUSY or attempt == _SETUP_ATTEMPTS - 1:
                    raise
        self.workers.mkdir(exist_ok=True)
        _write(self.workers / "cgroup.subtree_control", "+memory")
        for stale in self.workers.iterdir():
            if stale.is_dir():
                self.remove_now(stale)

    def create(self, limit: int | None) -> Path:
        """A new, empty worker group, its memory bound set before anyone joins it."""
        group = self.workers / f"worker-{secrets.token_hex(4)}"
        group.mkdir()
        try:
            _write(group / "memory.max", "max" if limit is None else str(limit))
            if limit is not None:
                # Swap would let the worker go past its bound instead of being stopped.
                _write_if_present(group / "memory.swap.max", "0")
            # The worker and whatever it started are one unit: an OOM kill takes them all.
            _write_if_present(group / "memory.oom.group", "1")
        except OSError:
            with contextlib.suppress(OSError):
                group.rmdir()
            raise
        return group

    @staticmethod
    def attach(group: Path, pid: int) -> None:
        _write(group / "cgroup.procs", str(pid))

    @staticmethod
    def oom_kills(group: Path) -> int | None:
        """Processes of the group the OOM killer (its own or the system's) has killed."""
        value = _key_value(group / "memory.events", "oom_kill")
        return None if value is None else int(value)

    @staticmethod
    def populated(group: Path) -> bool:
        return _key_value(group / "cgroup.events", "populated") == "1"

    @staticmethod
    def kill(group: Path) -> None:
        """SIGKILL every process in the group, escaped daemons included."""
        kill_file = group / "cgroup.kill"
        if kill_file.exists():
            _write(kill_file, "1")
            return
        # Before Linux 5.14: one by one (a fork in between is caught by the next pass).
        for pid in _pids(group):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def remove_now(self, group: Path) -> bool:
        """Kill what is left in `group` and remove it, waiting (bounded) for it to empty;
        False if it is still busy. For start-up; the scheduler waits without blocking."""
        deadline = time.monotonic() + CGROUP_EMPTY_TIMEOUT_SECONDS
        return any(try_remove(group) for _ in _polls(deadline))


def try_remove(group: Path) -> bool:
    """One step of removing a worker's group: kill what is in it, and remove it once it
    is empty. True once it is gone."""
    try:
        if WorkerCgroups.populated(group):
            WorkerCgroups.kill(group)
            return False
        group.rmdir()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


def _polls(deadline: float) -> Iterator[None]:
    while True:
        yield
        if time.monotonic() >= deadline:
            return
        time.sleep(CGROUP_EMPTY_POLL_SECONDS)


def _pids(group: Path) -> list[int]:
    return [int(pid) for pid in (group / "cgroup.procs").read_text().split()]


def _key_value(path: Path, key: str) -> str | None:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return value.strip()
    except OSError:
        return None
    return None


def _write(path: Path, value: str) -> None:
    # One write(2) per value: cgroup files act on each write, not on the file's content.
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _write_if_present(path: Path, value: str) -> None:
    if path.exists():
        _write(path, value)
