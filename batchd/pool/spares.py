"""The spare worker: one interpreter started ahead of need, adopted by the next launch."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

from batchd import constants
from batchd.pool.output import LogSink
from batchd.pool.process import WorkerLaunch, WorkerProcess, adopt, spawn, start_process
from batchd.wire.messages import Launch


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
                    adopt(candidate, launch, log_read, sink)
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
            worker, log_read = await start_process(sys.executable, self.home, env)
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
