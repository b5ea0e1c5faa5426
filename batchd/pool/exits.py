"""How a worker died, in words: its exit code or signal, and whether the OOM killer did it."""

from __future__ import annotations

import signal
from enum import StrEnum
from pathlib import Path

from batchd import constants


class OomDetector:
    """Tells a kernel OOM kill apart from other SIGKILLs.

    With cgroup v2 the kernel counts OOM kills in our cgroup's ``memory.events``; a
    SIGKILL that coincides with a new ``oom_kill`` is the OOM killer. Where that file
    cannot be read, a SIGKILL we did not send is taken to be the OOM killer.
    """

    def __init__(self) -> None:
        self._events = _memory_events_path()
        self._seen = self._oom_kills()

    def _oom_kills(self) -> int | None:
        if self._events is None:
            return None
        try:
            for line in self._events.read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            return None
        return None

    def was_oom(self, returncode: int, killed_by_us: bool) -> bool:
        if returncode != -signal.SIGKILL or killed_by_us:
            return False
        now = self._oom_kills()
        if now is None or self._seen is None:
            return True
        new_kills = now > self._seen
        self._seen = now
        return new_kills


def _memory_events_path() -> Path | None:
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            path = Path("/sys/fs/cgroup") / line[3:].lstrip("/") / "memory.events"
            return path if path.exists() else None
    return None


def describe_exit(returncode: int, oom: bool) -> str:
    if returncode == constants.WORKER_EXIT_OUT_OF_MEMORY:
        return "worker ran out of memory: over its [compute] mem limit (MemoryError)"
    if oom:
        return "worker was killed by the kernel's OOM killer (out of memory)"
    name = signal_name(returncode)
    if name is not None:
        return f"worker was killed by {name}"
    return f"worker exited with code {returncode}"


class ExitCause(StrEnum):
    """Why a worker exited, as GET /workers reports it."""

    EXITED = "exited"  # asked to (its job ended, it was recycled, the daemon drains)
    STOPPED = "stopped"  # killed by the daemon for a reason of its own (stop, drain)
    INIT_FAILED = "init_failed"  # the Handler could not be loaded or constructed
    CRASHED = "crashed"  # a non-zero exit code of its own
    SIGNALED = "signaled"  # a signal the daemon did not send
    OOM = "oom"  # the OOM killer, its memory cgroup, or a MemoryError over [compute] mem
    BATCH_TIMEOUT = "batch_timeout"  # killed: a batch ran past batch_timeout
    DISK_LIMIT = "disk_limit"  # killed: its workspace grew past [compute] disk
    PROTOCOL_ERROR = "protocol_error"  # killed: it broke the channel's framing


def exit_cause(
    returncode: int,
    *,
    oom: bool,
    killed: bool,
    ready: bool = False,
    death_cause: ExitCause | None = None,
) -> ExitCause:
    """Why a worker exited: `death_cause` when the daemon killed it for what the batch
    did, `killed` when for a reason of its own; `ready` once its Handler was constructed
    (the init-failure exit code is then a handler's own)."""
    if death_cause is not None:
        return death_cause
    if oom:
        return ExitCause.OOM
    if killed:
        return ExitCause.STOPPED
    if returncode == 0:
        return ExitCause.EXITED
    if returncode == constants.WORKER_EXIT_INIT_FAILED and not ready:
        return ExitCause.INIT_FAILED
    return ExitCause.SIGNALED if returncode < 0 else ExitCause.CRASHED


def signal_name(returncode: int) -> str | None:
    """The name of the signal that ended a process (a negative return code), else None."""
    if returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"
