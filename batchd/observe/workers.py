"""Worker history and live usage, for ``GET /workers``.

The history is the last EVENTS_REMEMBERED worker exits (with their cause), in memory: a
restart of the daemon forgets it. Usage (RSS, CPU, GPU memory) is read only when someone
asks, never on the batch path: /proc at most once per USAGE_MIN_INTERVAL, nvidia-smi at most
once per GPU_MEMORY_MAX_AGE, with a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

EVENTS_REMEMBERED = 500
USAGE_MIN_INTERVAL = 1.0
GPU_MEMORY_MAX_AGE = 10.0
GPU_QUERY_TIMEOUT = 5.0
GPU_QUERY = ("--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits")
MIB = 1024 * 1024

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class WorkerExitEvent:
    time: float  # epoch seconds
    api_name: str
    job_id: str
    slot: int
    pid: int
    cause: str  # batchd.pool.exits.ExitCause
    exit_code: int | None  # None when a signal ended it
    signal: str | None  # "SIGKILL", ...
    reason: str
    # Seconds until a replacement starts, when its death makes the daemon start one
    # after a back-off (a crash); None otherwise.
    restart_in: float | None


@dataclass(frozen=True, slots=True)
class LiveWorker:
    api_name: str
    job_id: str
    slot: int
    pid: int
    state: str
    gpus: tuple[int, ...]
    batch_id: str | None  # the batch it is on, if any
    started_at: float  # epoch seconds: when it took its job


class WorkerHistory:
    """The last `size` worker exits, oldest first."""

    def __init__(self, size: int = EVENTS_REMEMBERED) -> None:
        self._events: deque[WorkerExitEvent] = deque(maxlen=size)

    def record(self, event: WorkerExitEvent) -> None:
        self._events.append(event)

    def newest_first(self) -> list[WorkerExitEvent]:
        return list(reversed(self._events))


@dataclass(frozen=True, slots=True)
class ProcessUsage:
    rss_bytes: int
    # Of one core, between the last two reads (over its life at the first): over 100
    # for a process busy on several cores.
    cpu_percent: float


@dataclass(frozen=True, slots=True)
class _ProcStat:
    session: int
    cpu_ticks: int
    start_ticks: int
    rss_pages: int


def read_proc_stat(pid: int) -> _ProcStat | None:
    """/proc/<pid>/stat's fields that matter here; None once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            raw = stat.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = raw[raw.rfind(b")") + 2 :].split()
    # Fields 6 (session), 14-15 (utime, stime), 22 (starttime) and 24 (rss), from field 3.
    return _ProcStat(
        session=int(fields[3]),
        cpu_ticks=int(fields[11]) + int(fields[12]),
        start_ticks=int(fields[19]),
        rss_pages=int(fields[21]),
    )


def _uptime() -> float:
    with open("/proc/uptime") as uptime:
        return float(uptime.read().split()[0])


class UsageSampler:
    """RSS and CPU% of processes, from /proc, read at most once per `min_interval`."""

    def __init__(
        self,
        min_interval: float = USAGE_MIN_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._min_interval = min_interval
        self._clock = clock
        self._read_at = float("-inf")
        self._ticks: dict[int, tuple[int, int]] = {}  # pid: (start ticks, cpu ticks)
        self._usage: dict[int, ProcessUsage] = {}

    def sample(self, pids: Iterable[int]) -> dict[int, ProcessUsage]:
        """Usage of each of `pids` still alive."""
        wanted = set(pids)
        now = self._clock()
        if now - self._read_at < self._min_interval and wanted <= self._usage.keys():
            return {pid: self._usage[pid] for pid in wanted}
        elapsed, self._read_at = now - self._read_at, now
        ticks: dict[int, tuple[int, int]] = {}
        usage: dict[int, ProcessUsage] = {}
        uptime: float | None = None
        for pid in wanted:
            stat = read_proc_stat(pid)
            if stat is None:
                continue
            ticks[pid] = (stat.start_ticks, stat.cpu_ticks)
            before = self._ticks.get(pid)
            if before is not None and before[0] == stat.start_ticks:
                cpu_seconds, wall = (stat.cpu_ticks - before[1]) / _TICKS_PER_SECOND, elapsed
            else:  # first seen (or its pid reused): over its life so far
                uptime = _uptime() if uptime is None else uptime
                cpu_seconds = stat.cpu_ticks / _TICKS_PER_SECOND
                wall = uptime - stat.start_ticks / _TICKS_PER_SECOND
            percent = 100.0 * cpu_seconds / wall if wall > 0 else 0.0
            usage[pid] = ProcessUsage(stat.rss_pages * _PAGE_BYTES, round(percent, 1))
        self._ticks, self._usage = ticks, usage
        return usage


def parse_compute_apps(listing: str) -> dict[int, int]:
    """nvidia-smi's ``pid, used_memory`` lines (MiB) as bytes by pid; odd lines skipped."""
    used: dict[int, int] = {}
    for line in listing.splitlines():
        pid, _, mib = line.partition(",")
        with contextlib.suppress(ValueError):
            used[int(pid)] = used.get(int(pid), 0) + int(mib) * MIB
    return used


class GpuMemory:
    """GPU memory by worker, from nvidia-smi, cached for `max_age` seconds.

    A handler's CUDA may live in a process it started: what every process in the worker's
    session holds (a worker leads a session of its own) is counted as the worker's.
    """

    def __init__(
        self, max_age: float = GPU_MEMORY_MAX_AGE, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max_age = max_age
        self._clock = clock
        self._read_at = float("-inf")
        self._by_pid: dict[int, int] | None = None
        self._lock = asyncio.Lock()

    async def by_worker(self, nvidia_smi: str, workers: Iterable[int]) -> dict[int, int] | None:
        """Bytes of GPU memory by worker pid; None where nvidia-smi is missing or fails."""
        workers = list(workers)
        if not workers:
            return {}  # nobody to ask nvidia-smi about
        by_pid = await self._read(nvidia_smi)
        if by_pid is None:
            return None
        by_worker = dict.fromkeys(workers, 0)
        for pid, used in by_pid.items():
            stat = read_proc_stat(pid)
            owner = pid if pid in by_worker else (stat.session if stat is not None else None)
            if owner in by_worker:
                by_worker[owner] += used
        return by_worker

    async def _read(self, nvidia_smi: str) -> dict[int, int] | None:
        async with self._lock:
            if self._clock() - self._read_at >= self._max_age:
                self._by_pid = await _query(nvidia_smi)
                self._read_at = self._clock()
            return self._by_pid


async def _query(nvidia_smi: str) -> dict[int, int] | None:
    program = shutil.which(nvidia_smi)
    if program is None:
        return None
    try:
        process = await asyncio.create_subprocess_exec(
            program,
            *GPU_QUERY,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return None
    try:
        async with asyncio.timeout(GPU_QUERY_TIMEOUT):
            out, _ = await process.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        return None
    if process.returncode != 0:
        return None
    return parse_compute_apps(out.decode(errors="replace"))
