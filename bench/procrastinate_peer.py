"""The procrastinate peer: one no-op task per batch on the scale section's PostgreSQL
server (a database of its own per run), 2 worker processes of concurrency 1 each, as
batchd runs 2 worker processes and huey 2 process workers.

Every task is deferred before any worker runs, and deferring is not timed, as batchd's
admission is not in its drain rate. The clock runs from the launch of the workers
(process start included, as a batchd drain includes its workers' start) to the last
task's success, both read from procrastinate's own event table; the rate from the first
task's start to the last success is reported too. Completions are counted in
``procrastinate_jobs``, never in logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from bench.common import PROJECTS, WORKERS, ratio
from bench.pg_server import Server

DEFER_CHUNK = 5000
WORKER_COMMAND = [
    "-m",
    "procrastinate",
    "--app=procrastinate_tasks.app",
    "--log-level=warning",
    "worker",
]
WORKER_OPTIONS = ["--concurrency=1", "--delete-jobs=never"]


def available() -> bool:
    return importlib.util.find_spec("procrastinate") is not None


def version() -> str:
    from importlib.metadata import version as installed

    return installed("procrastinate")


@dataclass
class ProcrastinateRun:
    tasks: int
    done: int
    launched_at: float
    started_at: float
    ended_at: float
    capped: bool

    @property
    def rate(self) -> float:
        """Tasks per second from the workers' launch to the last success."""
        return ratio(self.done, self.ended_at - self.launched_at)

    @property
    def busy_rate(self) -> float:
        """Tasks per second from the first task's start to the last success."""
        return ratio(self.done, self.ended_at - self.started_at)


def _tasks_module(dsn: str) -> ModuleType:
    os.environ["BENCH_PROCRASTINATE_DSN"] = dsn
    if str(PROJECTS) not in sys.path:
        sys.path.insert(0, str(PROJECTS))
    return importlib.reload(importlib.import_module("procrastinate_tasks"))


async def _defer(tasks: ModuleType, count: int) -> None:
    """procrastinate's schema, then `count` tasks, a batch_defer of DEFER_CHUNK at a time."""
    async with tasks.app.open_async():
        await tasks.app.schema_manager.apply_schema_async()
        for start in range(0, count, DEFER_CHUNK):
            kwargs = [{"payload": [i]} for i in range(start, min(count, start + DEFER_CHUNK))]
            await tasks.noop.batch_defer_async(*kwargs)


def _progress(dsn: str) -> tuple[int, int, float | None, float | None]:
    """(succeeded, failed, first start, last success) as procrastinate stored them."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'),"
            " (SELECT count(*) FROM procrastinate_jobs WHERE status = 'failed'),"
            " (SELECT extract(epoch FROM min(at)) FROM procrastinate_events"
            "  WHERE type = 'started'),"
            " (SELECT extract(epoch FROM max(at)) FROM procrastinate_events"
            "  WHERE type = 'succeeded')"
        ).fetchone()
    assert row is not None
    first, last = (None if value is None else float(value) for value in row[2:])
    return int(row[0]), int(row[1]), first, last


def run(server: Server, workdir: Path, count: int, cap_s: float) -> ProcrastinateRun:
    """Defer `count` no-op tasks, then time the workers draining them (at most `cap_s`)."""
    root = Path(tempfile.mkdtemp(prefix="procrastinate-", dir=workdir))
    with server.database() as dsn:
        tasks = _tasks_module(dsn)
        asyncio.run(_defer(tasks, count))
        env = dict(os.environ, BENCH_PROCRASTINATE_DSN=dsn, PYTHONPATH=str(PROJECTS))
        workers: list[subprocess.Popen[bytes]] = []
        try:
            launched = time.time()
            for index in range(WORKERS):
                with (root / f"worker-{index}.log").open("ab") as log:
                    workers.append(
                        subprocess.Popen(
                            [sys.executable, *WORKER_COMMAND, *WORKER_OPTIONS, f"--name=w{index}"],
                            cwd=PROJECTS,
                            env=env,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL,
                            start_new_session=True,
                        )
                    )
            deadline = launched + cap_s
            while True:
                done, failed, first, last = _progress(dsn)
                if failed:
                    raise RuntimeError(f"{failed} procrastinate tasks failed (see {root})")
                if done >= count or time.time() >= deadline:
                    break
                for worker in workers:
                    if worker.poll() is not None:
                        raise RuntimeError(f"a procrastinate worker exited {worker.returncode}")
                time.sleep(0.05)
        finally:
            for worker in workers:
                _kill_group(worker)
        capped = done < count
        end = time.time() if capped or last is None else last
        return ProcrastinateRun(count, done, launched, first or launched, end, capped)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        process.wait(10)
