"""A worker process's handle: spawning it, its framed channel, signals and waiting.

A worker is spawned fresh (never forked: CUDA cannot be initialised again in a forked
child) in its own workspace, a writable copy of the API snapshot (batchd/workspace.py).
Its stdout and stderr are captured into the job's log; its protocol channel is a
socketpair passed as an inherited descriptor, so a handler's prints cannot corrupt it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from batchd import constants
from batchd.pool.output import LogSink, pump_output, pump_records, read_pipe
from batchd.store.records import Lease
from batchd.wire import framing as protocol
from batchd.wire.ids import batch_id
from batchd.wire.messages import EXIT_FRAME, Batches, FromWorker, from_worker


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
    # When it took its job (epoch): a spare started earlier begins its work here.
    started_at: float = field(default_factory=time.time)

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


async def spawn(launch: WorkerLaunch, sink: LogSink) -> WorkerProcess:
    """Start a worker; its log records, stdout and stderr all flow into `sink`."""
    worker, log_read = await start_process(launch.python, launch.cwd, launch.env)
    adopt(worker, launch, log_read, sink)
    return worker


def adopt(worker: WorkerProcess, launch: WorkerLaunch, log_read: int, sink: LogSink) -> None:
    """Make a started process the worker of `launch`'s job: labels, and its output."""
    worker.slot = launch.slot
    worker.job_id = launch.job_id
    worker.labels = dict(launch.labels)
    worker.started_at = time.time()
    process = worker.process
    assert process.stdout is not None and process.stderr is not None
    worker.output_tasks = [
        asyncio.create_task(pump_records(read_pipe(log_read), worker, sink)),
        asyncio.create_task(pump_output(process.stdout, worker, sink, "stdout")),
        asyncio.create_task(pump_output(process.stderr, worker, sink, "stderr")),
    ]


async def start_process(
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


def worker_pythonpath(runtime_dir: Path) -> Path:
    """A folder holding only a link to the batchd package.

    Workers under another interpreter need ``batchd`` importable, but putting the
    daemon's site-packages on their path would shadow the API's own libraries.
    """
    package = Path(__file__).resolve().parents[1]  # the batchd package, not batchd/pool
    return _linking(runtime_dir / "pylib", {"batchd": package})


def cortex_pythonpath(runtime_dir: Path) -> Path:
    """A folder holding only links to batchd's ``cortex`` and ``cortex_internal`` modules
    (batchd/worker/cortex_path), put on the path of the APIs that ask for them."""
    modules = Path(__file__).resolve().parents[1] / "worker" / "cortex_path"
    return _linking(runtime_dir / "cortexlib", {name: modules / name for name in CORTEX_MODULES})


CORTEX_MODULES = ("cortex", "cortex_internal")


def _linking(folder: Path, links: Mapping[str, Path]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, target in links.items():
        link = folder / name
        if not link.is_symlink() or link.resolve() != target:
            tmp = folder / f".{name}-{os.getpid()}"
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(target, target_is_directory=True)
            tmp.replace(link)
    return folder
