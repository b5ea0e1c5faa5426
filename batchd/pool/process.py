"""Worker processes: spawning, the framed channel, and telling how one died.

A worker is spawned fresh (never forked: CUDA cannot be initialised again in a forked
child) in its own workspace, a writable copy of the API snapshot (batchd/workspace.py).
Its stdout and stderr are captured into the job's log; its protocol channel is a
socketpair passed as an inherited descriptor, so a handler's prints cannot corrupt it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from batchd import constants
from batchd.store.base import Lease
from batchd.wire import framing as protocol
from batchd.wire.ids import batch_id
from batchd.wire.messages import EXIT_FRAME, Batches, FromWorker, Launch, from_worker
from batchd.worker.log import format_time


class WorkerState(StrEnum):
    INITIALIZING = "initializing"
    RUNNING = "running"
    STOPPING = "stopping"
    EXITED = "exited"


@dataclass(eq=False)
class WorkerProcess:
    """A handle on one worker process: its channel, signals, exit and output. What the
    scheduler knows of it (leases held, batches done, why it died) is kept by the scheduler
    (batchd/scheduler/state.py's WorkerRun)."""

    slot: int
    job_id: str
    process: asyncio.subprocess.Process
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    labels: dict[str, Any]
    output_tasks: list[asyncio.Task[None]] = field(default_factory=list)
    gpus: list[int] = field(default_factory=list)
    memory_group: Path | None = None
    # Set by whoever hands the worker batches: the one it is on, for labelling its output
    # (None: it holds none, and its output carries no batchID).
    held_seq: Callable[[], int | None] = field(default=lambda: None)
    # The shared word where the worker keeps the sequence number of its current batch.
    progress_fd: int | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    async def send(self, data: bytes) -> None:
        if self.writer.is_closing():
            raise ConnectionResetError(f"channel to worker {self.slot} is closed")
        self.writer.write(data)
        await self.writer.drain()

    async def receive(self) -> FromWorker:
        """The next message, checked: BadFrame when the worker broke the protocol."""
        length = protocol.frame_length(await self.reader.readexactly(constants.FRAME_HEADER_BYTES))
        return from_worker(protocol.decode(await self.reader.readexactly(length)))

    async def send_batches(self, leases: Sequence[Lease]) -> None:
        await self.send(Batches.splice(leases))

    def current_seq(self) -> int | None:
        """The batch the worker started last (it may have finished it), if any."""
        if self.progress_fd is None:
            return None
        try:
            seq = int.from_bytes(os.pread(self.progress_fd, 8, 0), "little")
        except OSError:
            return None
        return seq or None

    async def request_exit(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self.send(EXIT_FRAME)

    def signal(self, signum: int) -> None:
        """Signal the worker and every process its handler started (its process group:
        the worker leads a session of its own)."""
        if self.process.returncode is None:
            self.signal_group(signum)

    def signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    async def wait(self) -> int:
        """The exit status, once the worker has exited and its output is read.

        A process the handler started in a session of its own keeps the worker's output
        pipes open for as long as it lives, and where no cgroup reaps it (cgroup v1,
        RLIMIT_AS) the output readers (and Python 3.11's Process.wait(), which waits for
        the pipes too) would never finish: the worker's slot would never be freed. So the
        exit is watched on its own, and the pipes get OUTPUT_DRAIN_GRACE seconds after it
        before they are closed.
        """
        waiter = asyncio.ensure_future(self.process.wait())
        while self.process.returncode is None and not waiter.done():
            await asyncio.wait({waiter}, timeout=constants.EXIT_POLL_INTERVAL)
        _, lingering = await asyncio.wait(
            {waiter, *self.output_tasks}, timeout=constants.OUTPUT_DRAIN_GRACE
        )
        if lingering:
            # The one handle on the pipes that both asyncio's and uvloop's transports share.
            transport = getattr(self.process, "_transport", None)
            for fd in (1, 2):
                pipe = transport.get_pipe_transport(fd) if transport is not None else None
                if pipe is not None:
                    pipe.close()
        return await waiter

    async def terminate(self, grace: float) -> None:
        """SIGTERM, then SIGKILL if it is still alive after `grace` seconds."""
        self.signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                await self.wait()
        except TimeoutError:
            self.signal(signal.SIGKILL)

    def close(self) -> None:
        self.writer.close()

    def close_progress(self) -> None:
        if self.progress_fd is not None:
            os.close(self.progress_fd)
            self.progress_fd = None

    def current_labels(self) -> dict[str, Any]:
        seq = self.held_seq()
        if seq is None:
            return dict(self.labels)
        return {**self.labels, "batchID": batch_id(self.job_id, seq)}

    async def output_done(self) -> None:
        await asyncio.gather(*self.output_tasks, return_exceptions=True)


@dataclass(frozen=True)
class WorkerLaunch:
    slot: int
    job_id: str
    python: str
    cwd: Path
    env: Mapping[str, str]
    labels: Mapping[str, Any]
    gpus: int = 0
    mem: int | None = None
    disk: int | None = None


LogSink = Callable[[dict[str, Any]], None]


async def spawn(launch: WorkerLaunch, sink: LogSink) -> WorkerProcess:
    """Start a worker; its log records, stdout and stderr all flow into `sink`."""
    worker, log_read = await _start(launch.python, launch.cwd, launch.env)
    _adopt(worker, launch, log_read, sink)
    return worker


def _adopt(worker: WorkerProcess, launch: WorkerLaunch, log_read: int, sink: LogSink) -> None:
    """Make a started process the worker of `launch`'s job: labels, and its output."""
    worker.slot = launch.slot
    worker.job_id = launch.job_id
    worker.labels = dict(launch.labels)
    process = worker.process
    assert process.stdout is not None and process.stderr is not None
    worker.output_tasks = [
        asyncio.create_task(pump_records(_read_pipe(log_read), worker, sink)),
        asyncio.create_task(pump_output(process.stdout, worker, sink, "stdout")),
        asyncio.create_task(pump_output(process.stderr, worker, sink, "stderr")),
    ]


class SparePool:
    """One worker interpreter started ahead of need, under the daemon's own Python: a
    job's worker then skips Python's start-up and the worker's imports (tens of
    milliseconds), which is most of the wait from submission to the first batch.

    A spare is generic: it learns its job's directory and environment when adopted. A
    launch that needs another interpreter, or other variables read only at start-up
    (PYTHON*, LD_*, MALLOC_*: see _startup_env), gets a fresh process."""

    def __init__(self, home: Path) -> None:
        # Where a spare waits (its current directory until adopted), so it can be told apart.
        self.home = home
        self._spare: tuple[WorkerProcess, int, dict[str, str]] | None = None
        self._refill: asyncio.Task[None] | None = None

    async def spawn(self, launch: WorkerLaunch, sink: LogSink) -> WorkerProcess:
        if self._spare is None and self._refill is not None and not self._refill.done():
            # A spare is being started (a few milliseconds): it is still the quicker one.
            await asyncio.gather(self._refill, return_exceptions=True)
        spare, self._spare = self._spare, None
        worker: WorkerProcess | None = None
        if spare is not None:
            candidate, log_read, startup = spare
            if self._fits(launch, startup) and candidate.process.returncode is None:
                try:
                    await candidate.send(Launch(str(launch.cwd), dict(launch.env)).encode())
                    _adopt(candidate, launch, log_read, sink)
                    worker = candidate
                except ConnectionError:
                    pass
            if worker is None:
                _discard(candidate, log_read)
        if worker is None:
            worker = await spawn(launch, sink)
        if launch.python == sys.executable and (self._refill is None or self._refill.done()):
            self._refill = asyncio.create_task(self._start_spare(launch))
        return worker

    @staticmethod
    def _fits(launch: WorkerLaunch, startup: dict[str, str]) -> bool:
        return launch.python == sys.executable and _startup_env(launch.env) == startup

    async def _start_spare(self, launch: WorkerLaunch) -> None:
        startup = _startup_env(launch.env)
        env = {**os.environ, **startup, constants.ENV_SPARE: "1"}
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            worker, log_read = await _start(sys.executable, self.home, env)
        except OSError:
            return
        if self._spare is not None:
            _discard(*self._spare[:2])
        self._spare = (worker, log_read, startup)

    async def close(self) -> None:
        if self._refill is not None:
            await asyncio.gather(self._refill, return_exceptions=True)
        if self._spare is not None:
            worker, log_read, _ = self._spare
            self._spare = None
            _discard(worker, log_read)
            await worker.wait()


# Variables read only when a process starts: by Python (PYTHON*, and the locale it takes
# its encodings from), by the dynamic loader (LD_*), and by glibc's malloc and tunables.
# Set in a running spare, they would change nothing.
_STARTUP_PREFIXES = ("PYTHON", "LC_", "LANG", "LD_", "MALLOC_", "GLIBC_TUNABLES")


def _startup_env(env: Mapping[str, str]) -> dict[str, str]:
    """The variables that take effect only at exec: a spare fits a launch only when it
    was started with the same ones."""
    return {key: value for key, value in env.items() if key.startswith(_STARTUP_PREFIXES)}


def _discard(worker: WorkerProcess, log_read: int) -> None:
    worker.signal(signal.SIGKILL)
    worker.close()
    worker.close_progress()
    os.close(log_read)


async def _start(
    python: str, cwd: Path, launch_env: Mapping[str, str]
) -> tuple[WorkerProcess, int]:
    """A worker process with its channel; the read end of its log pipe is returned for
    whoever adopts it."""
    parent_sock, child_sock = socket.socketpair()
    log_read, log_write = os.pipe()
    progress_fd = os.memfd_create("batchd-progress")
    os.ftruncate(progress_fd, 8)
    env = dict(launch_env)
    env[constants.ENV_WORKER_FD] = str(child_sock.fileno())
    env[constants.ENV_LOG_FD] = str(log_write)
    env[constants.ENV_PROGRESS_FD] = str(progress_fd)
    env["BATCHD_DAEMON_PID"] = str(os.getpid())
    try:
        process = await asyncio.create_subprocess_exec(
            python,
            "-m",
            "batchd.worker",
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            pass_fds=(child_sock.fileno(), log_write, progress_fd),
            # Own session: a Ctrl-C meant for the daemon must not hit workers directly;
            # the daemon decides how they stop.
            start_new_session=True,
            limit=constants.MAX_LOG_LINE_BYTES,
        )
    except BaseException:
        parent_sock.close()
        os.close(log_read)
        os.close(progress_fd)
        raise
    finally:
        child_sock.close()
        os.close(log_write)
    reader, writer = await asyncio.open_unix_connection(
        sock=parent_sock, limit=constants.MAX_FRAME_BYTES
    )
    worker = WorkerProcess(
        slot=-1,
        job_id="",
        process=process,
        reader=reader,
        writer=writer,
        labels={},
        progress_fd=progress_fd,
    )
    return worker, log_read


async def _read_pipe(fd: int) -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=constants.MAX_LOG_LINE_BYTES, loop=loop)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader, loop=loop), os.fdopen(fd, "rb", buffering=0)
    )
    return reader


async def _lines(stream: asyncio.StreamReader) -> AsyncIterator[bytes | None]:
    """Lines of a stream; None stands for a line over the limit, which is skipped."""
    skipping = False
    while True:
        try:
            line = await stream.readline()
        except ValueError:
            # asyncio dropped what it buffered of the long line; skip the rest of it too.
            if not skipping:
                yield None
            skipping = True
            continue
        if not line:
            return
        if skipping:
            skipping = not line.endswith(b"\n")
            continue
        yield line


def _dropped(worker: WorkerProcess) -> dict[str, Any]:
    return {
        "asctime": format_time(time.time()),
        "levelname": "WARNING",
        "message": f"log line dropped: over {constants.MAX_LOG_LINE_BYTES} bytes",
        "process": worker.pid,
        "labels": worker.current_labels(),
    }


async def pump_records(
    pipe: Awaitable[asyncio.StreamReader], worker: WorkerProcess, sink: LogSink
) -> None:
    """Records from the handler's logger: JSON objects, labelled by the daemon."""
    stream = await pipe
    async for line in _lines(stream):
        if line is None:
            sink(_dropped(worker))
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not an object")
        except (ValueError, RecursionError):
            # Not a record (a handler wrote to the pipe itself, or nested it too deep):
            # kept as text, and the pipe is still drained.
            record = {
                "asctime": format_time(time.time()),
                "levelname": "INFO",
                "message": line.decode(errors="replace").rstrip("\n"),
                "process": worker.pid,
            }
        worker_labels = record.get("labels")
        record["labels"] = {
            **(worker_labels if isinstance(worker_labels, dict) else {}),
            **worker.labels,
        }
        sink(record)


async def pump_output(
    stream: asyncio.StreamReader, worker: WorkerProcess, sink: LogSink, name: str
) -> None:
    """What the handler prints becomes records too: stdout at INFO, stderr at WARNING."""
    level = "INFO" if name == "stdout" else "WARNING"
    async for line in _lines(stream):
        if line is None:
            sink(_dropped(worker))
            continue
        sink(
            {
                "asctime": format_time(time.time()),
                "levelname": level,
                "message": line.decode(errors="replace").rstrip("\n"),
                "process": worker.pid,
                "labels": worker.current_labels(),
                "stream": name,
            }
        )


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


def worker_pythonpath(runtime_dir: Path) -> Path:
    """A folder holding only a link to the batchd package.

    Workers under another interpreter need ``batchd`` importable, but putting the
    daemon's site-packages on their path would shadow the API's own libraries.
    """
    shim = runtime_dir / "pylib"
    shim.mkdir(parents=True, exist_ok=True)
    link = shim / "batchd"
    package = Path(__file__).resolve().parents[1]  # the batchd package, not batchd/pool
    if not link.is_symlink() or link.resolve() != package:
        tmp = shim / f".batchd-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(package, target_is_directory=True)
        tmp.replace(link)
    return shim
