"""The huey peer: SqliteHuey (WAL, fsync=True), its consumer with 2 process workers.

One task per batch. The consumer is started first (as batchd is), then every task is
enqueued and the clock runs from the first enqueue until huey's result store holds a result
for every task. Completions are counted in the result store, never in logs.
"""

from __future__ import annotations

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
from typing import Any

import psutil

from bench.common import PROJECTS, WORKERS, Result, progress, ratio

# Poll the queue every 10 ms, backing off to 100 ms at most when it is empty: huey's
# defaults (100 ms, up to 10 s) would only make it look slower than it is.
CONSUMER_OPTIONS = ["-w", str(WORKERS), "-k", "process", "-d", "0.01", "-m", "0.1", "-n", "-q"]


def available() -> bool:
    return importlib.util.find_spec("huey") is not None


@dataclass
class HueyRun:
    tasks: int
    done: int
    enqueue_s: float
    total_s: float
    capped: bool

    @property
    def rate(self) -> float:
        return ratio(self.done, self.total_s)


def version() -> str:
    import huey

    return str(huey.__version__)


def _tasks_module(db: Path) -> ModuleType:
    os.environ["BENCH_HUEY_DB"] = str(db)
    if str(PROJECTS) not in sys.path:
        sys.path.insert(0, str(PROJECTS))
    module = importlib.import_module("huey_tasks")
    return importlib.reload(module)


def run_or_note(
    result: Result, workdir: Path, task: str, payloads: list[Any], cap_s: float, **kwargs: Any
) -> HueyRun | None:
    """:func:`run`; a failure is noted in `result` (the batchd figures stand without it)."""
    try:
        peer = run(workdir, task, payloads, cap_s, **kwargs)
    except Exception as exc:
        progress(f"huey failed: {type(exc).__name__}: {exc}")
        result.note(f"A huey run failed: {type(exc).__name__}: {exc}")
        return None
    if peer.capped:
        result.note(
            f"huey did not finish within its {cap_s:.0f} s cap: {peer.done:,}/{peer.tasks:,}"
        )
    return peer


def run(workdir: Path, task: str, payloads: list[Any], cap_s: float, **kwargs: Any) -> HueyRun:
    """Enqueue one `task` per payload and time until every result is stored."""
    root = Path(tempfile.mkdtemp(prefix="huey-", dir=workdir))
    db = root / "huey.db"
    tasks = _tasks_module(db)
    env = dict(os.environ, BENCH_HUEY_DB=str(db), PYTHONPATH=str(PROJECTS))
    with (root / "consumer.log").open("ab") as log:
        consumer = subprocess.Popen(
            [sys.executable, "-m", "huey.bin.huey_consumer", "huey_tasks.huey", *CONSUMER_OPTIONS],
            cwd=PROJECTS,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        _wait_ready(consumer)
        function = getattr(tasks, task)
        huey = tasks.huey
        start = time.perf_counter()
        for payload in payloads:
            function(payload, **kwargs)
        enqueued = time.perf_counter()
        deadline = start + cap_s
        while True:
            done = int(huey.result_count())
            now = time.perf_counter()
            if done >= len(payloads) or now >= deadline:
                break
            if consumer.poll() is not None:
                raise RuntimeError(f"huey consumer exited {consumer.returncode}")
            time.sleep(0.05)
        return HueyRun(len(payloads), done, enqueued - start, now - start, done < len(payloads))
    finally:
        _kill_group(consumer)
        with contextlib.suppress(Exception):
            tasks.huey.storage.close()


def _wait_ready(consumer: subprocess.Popen[bytes]) -> None:
    """Until the consumer has its worker processes (and a moment to start polling)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if consumer.poll() is not None:
            raise RuntimeError(f"huey consumer exited {consumer.returncode}")
        try:
            children = psutil.Process(consumer.pid).children()
        except psutil.Error:
            children = []
        if len(children) >= WORKERS:
            time.sleep(0.3)
            return
        time.sleep(0.05)
    raise RuntimeError("huey consumer did not start its workers in 30 s")


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        process.wait(10)
