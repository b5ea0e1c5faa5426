"""Confining a worker process: it dies with the daemon, takes everything it started with
it, and stays within its memory limit (standard library only)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

from batchd.constants import ENV_CGROUP, ENV_MEMORY_LIMIT

_PR_SET_PDEATHSIG = 1


def _on_parent_death(signum: int) -> bool:
    """Have the kernel send `signum` when our parent dies; False where it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL us when the daemon dies, so no worker is orphaned."""
    if not _on_parent_death(signal.SIGKILL):
        return
    expected = os.environ.get("BATCHD_DAEMON_PID")
    if expected and os.getppid() != int(expected):
        # The daemon died before prctl took effect.
        os._exit(1)


def start_group_guard() -> None:
    """Fork a tiny guard that kills this worker's whole process group once the worker is
    gone (however it went, the daemon's death included), so nothing a handler started -
    a subprocess, a pool - outlives it. The worker leads its own process group."""
    worker = os.getpid()
    if not sys.platform.startswith("linux") or os.getpgrp() != worker:
        # Not a group of our own (run by hand, not by the daemon): nothing safe to kill.
        return
    if os.fork() != 0:
        return
    try:
        # Release everything inherited: the daemon must see the worker's pipes close.
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.closerange(3, 65536)
        # The daemon's SIGTERM to the group is meant for the worker's grace period.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGUSR2, lambda *_: os.killpg(0, signal.SIGKILL))
        if not _on_parent_death(signal.SIGUSR2) or os.getppid() != worker:
            os.killpg(0, signal.SIGKILL)
        while True:
            signal.pause()
    finally:
        os._exit(0)


def join_cgroup() -> None:
    """Move into the cgroup v2 group the daemon made for this worker (memory.max set),
    before anything is forked or loaded. The daemon moves us too; this closes the gap
    between the spawn and its write."""
    group = os.environ.get(ENV_CGROUP)
    if not group:
        return
    try:
        with open(os.path.join(group, "cgroup.procs"), "w") as procs:
            procs.write("0")
    except OSError:
        pass


def bound_memory() -> None:
    limit = os.environ.get(ENV_MEMORY_LIMIT)
    if limit:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (int(limit), int(limit)))
