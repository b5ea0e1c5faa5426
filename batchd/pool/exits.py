"""How a worker died, in words: its exit code or signal, and whether the OOM killer did it."""

from __future__ import annotations

import signal
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
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"worker was killed by {name}"
    return f"worker exited with code {returncode}"
