"""Shared pieces of the fault-injection suite.

Every scenario starts with the ``scenario`` fixture: a real daemon of its own
(``make_daemon`` from tests/conftest.py) with the fault handler below deployed, real worker
processes and real SQLite. The handler appends one fsynced line per event to a side file,
``<key> <event> <pid> <unix time> [extra]``, an independent record of every ``__init__``,
``handle_batch`` and ``on_job_complete`` call that the tests hold the daemon's own
counters against, with what tests/faults/probes.py reads from /proc and the database.

Sizes: short by default (``make test``); ``BATCHD_FAULTS=full`` (``make faults``) picks
the full sizes and rewrites RESULTS.md with the figures every scenario records.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from batchd.client import Client
from tests.conftest import Daemon, wait_for, wait_job
from tests.faults import figures as figures_module
from tests.faults.probes import BatchRow, check_attempts, workers_of

MODE = os.environ.get("BATCHD_FAULTS", "short")
FULL = MODE == "full"
# Full scenarios run for minutes; pytest-timeout's default (120 s) fits the short ones.
FULL_TEST_TIMEOUT = 1200
SEED = int(os.environ.get("BATCHD_FAULTS_SEED", str(secrets.randbits(32))))

OOM_ERROR = "worker was killed by the kernel's OOM killer (out of memory)"
SIGKILL_ERROR = "worker was killed by SIGKILL"
RESTART_ERROR = "the daemon stopped while this batch was being handled"


def size(short: Any, full: Any) -> Any:
    """The short size under `make test`, the full one under `make faults`."""
    return full if FULL else short


# -- figures and RESULTS.md ------------------------------------------------------------

_REGISTRY = figures_module.Registry()
_STARTED = time.monotonic()


def _doc(item: pytest.Item) -> str | None:
    function = getattr(item, "function", None)
    return None if function is None else function.__doc__


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The figures this scenario reports; they land in RESULTS.md after a full run."""
    return _REGISTRY.row(request.node.nodeid, _doc(request.node)).figures


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """Random kill moments; BATCHD_FAULTS_SEED=<seed> repeats a run's choices."""
    return random.Random(SEED ^ zlib.crc32(request.node.name.encode()))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not FULL:
        return
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.timeout(FULL_TEST_TIMEOUT))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.when != "call" and report.passed:
        return
    if hasattr(report, "wasxfail"):
        result = "xfail (known bug)" if report.skipped else "XPASS"
    elif report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
        result = f"skipped: {reason.removeprefix('Skipped: ')}"
    elif report.failed:
        result = "FAILED" if report.when == "call" else "error"
    else:
        result = "passed"
    _REGISTRY.outcome(item.nodeid, _doc(item), result, report.duration)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not (FULL or os.environ.get("BATCHD_FAULTS_SHOW")):
        return
    terminalreporter.section(f"fault figures ({MODE}, BATCHD_FAULTS_SEED={SEED})")
    for row in _REGISTRY.rows.values():
        terminalreporter.write_line(f"{row.title} [{row.outcome}, {row.seconds:.1f}s]")
        terminalreporter.write_line(f"    {row.figures}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Only a full run rewrites RESULTS.md; a short one must leave it alone.
    if FULL and _REGISTRY.rows:
        rows = [row for row in _REGISTRY.rows.values() if row.outcome != "not run"]
        figures_module.write(rows, MODE, SEED, time.monotonic() - _STARTED)


# -- the handler -----------------------------------------------------------------------

FAULT_HANDLER = """
import os, signal, time

SIDE = os.environ["SIDE"]


def record(key, event, extra=""):
    line = f"{key} {event} {os.getpid()} {time.time():.6f} {extra}".rstrip() + "\\n"
    fd = os.open(SIDE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def hog():
    with open(os.path.join(os.environ["OOM_CGROUP"], "cgroup.procs"), "w") as procs:
        procs.write(str(os.getpid()))
    memory = []
    while True:
        memory.append(bytearray(16 * 1024 * 1024))


class Handler:
    def __init__(self, config, job_spec):
        self.job_id = job_spec["job_id"]
        self.delay = float(config.get("delay", 0))
        self.slow_s = float(config.get("slow_s", 1.0))
        names = ("poison", "hang", "hog", "spawn", "slow")
        self.sets = {name: set(config.get(name, ())) for name in names}
        self.results = config.get("results", True)
        self.hook_hold = config.get("hook_hold")
        record(self.job_id, "init")
        if config.get("ignore_sigterm"):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if config.get("init_fail") == "raise":
            raise RuntimeError("cannot load the model: weights are corrupt")
        if config.get("init_fail") == "exit":
            os._exit(1)

    def handle_batch(self, payload, batch_id):
        record(batch_id, "call")
        for item in payload:
            if item in self.sets["poison"]:
                raise ValueError(f"poison item {item!r}")
            if item in self.sets["hang"]:
                time.sleep(3600)
            if item in self.sets["hog"]:
                hog()
            if item in self.sets["slow"]:
                time.sleep(self.slow_s)
            if item in self.sets["spawn"]:
                import subprocess
                subprocess.Popen(["sleep", "3600"])
                time.sleep(3600)
        if self.delay:
            time.sleep(self.delay)
        record(batch_id, "done")
        return payload if self.results else None

    def on_job_complete(self, status):
        m = status["batch_metrics"]
        counts = [m["succeeded"], m["failed"], m["in_progress"], status["batches_in_queue"]]
        record(self.job_id, "hook", " ".join(str(n) for n in counts))
        while self.hook_hold and os.path.exists(self.hook_hold):
            time.sleep(0.01)
        record(self.job_id, "hook-done")
"""


@dataclass(frozen=True)
class Event:
    key: str
    event: str
    pid: int
    t: float
    extra: tuple[str, ...]


class SideFile:
    """The handler's own record of what ran, read back by the test."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def events(self) -> list[Event]:
        if not self.path.exists():
            return []
        events = []
        for line in self.path.read_text().splitlines():
            key, event, pid, t, *extra = line.split(" ")
            events.append(Event(key, event, int(pid), float(t), tuple(extra)))
        return events

    def of(self, event: str) -> list[Event]:
        return [e for e in self.events() if e.event == event]

    def calls(self) -> Counter[str]:
        """handle_batch calls per batch id."""
        return Counter(e.key for e in self.of("call"))

    def cut_off(self, start: float, end: float) -> list[Event]:
        """Calls begun before `end` and not finished before `start`: the ones an end that
        came somewhere between `start` and `end` may have cut off."""
        running: dict[int, Event] = {}
        cut = []
        for e in self.events():
            if e.event == "call" and e.t < end:
                running[e.pid] = e
            elif e.event == "done" and e.pid in running and running[e.pid].key == e.key:
                call = running.pop(e.pid)
                if e.t >= start:
                    cut.append(call)
        return cut + list(running.values())


Project = Callable[..., Path]


@pytest.fixture
def side(tmp_path: Path) -> SideFile:
    return SideFile(tmp_path / "side.log")


@pytest.fixture
def fault_api(make_project: Project, side: SideFile) -> Callable[..., Path]:
    """Write the fault handler project `name`; `env` adds handler environment variables."""

    def factory(name: str, env: dict[str, str] | None = None) -> Path:
        variables = {"SIDE": str(side.path), **(env or {})}
        toml = "[handler.env]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in variables.items())
        return make_project(name, FAULT_HANDLER, extra_toml=toml)

    return factory


@dataclass
class Scenario:
    """One scenario's world: a running daemon with the project `api` deployed, and the
    side file its handler writes."""

    daemon: Daemon
    api: str
    side: SideFile

    @property
    def client(self) -> Client:
        return self.daemon.client

    def submit(self, job: dict[str, Any] | bytes) -> str:
        return str(self.client.submit(self.api, job)["job_id"])

    def status(self, job_id: str) -> dict[str, Any]:
        return job_status(self.daemon, self.api, job_id)

    def succeeded(self, job_id: str) -> int:
        return int(self.status(job_id)["batch_metrics"]["succeeded"])

    def wait(self, job_id: str, timeout: float = 90) -> dict[str, Any]:
        """Until the job ends; its final status."""
        return wait_job(self.client, self.api, job_id, timeout=timeout)

    def wait_succeeded(self, job_id: str, count: int, what: str, timeout: float = 60) -> None:
        wait_for(lambda: self.succeeded(job_id) >= count, timeout=timeout, what=what)

    def stop(self, job_id: str) -> dict[str, Any]:
        return self.client.stop_job(self.api, job_id)

    def results(self, job_id: str) -> list[dict[str, Any]]:
        return list(self.client.results(self.api, job_id))

    def failed(self, job_id: str) -> list[dict[str, Any]]:
        return list(self.client.failed(self.api, job_id))

    def workers(self) -> set[int]:
        return workers_of(self.daemon)

    def kill_daemon(self) -> set[int]:
        """kill -9 of the daemon; the workers it had."""
        pids = self.workers()
        self.daemon.kill()
        return pids

    def check_attempts(
        self, job_id: str, max_receive_count: int, refunded: Counter[str] | None = None
    ) -> dict[int, BatchRow]:
        return check_attempts(self.daemon, job_id, self.side, max_receive_count, refunded)

    def check_each_batch_succeeded_once(
        self, job_id: str, final: dict[str, Any], results: list[dict[str, Any]], total: int
    ) -> None:
        """The job succeeded with one result for each of its `total` batches."""
        ids = {row["batch_id"] for row in results}
        assert final["status"] == "succeeded", final
        assert final["batch_metrics"]["succeeded"] == total
        assert len(results) == len(ids) == total
        assert ids == {batch_key(job_id, i) for i in range(total)}


StartScenario = Callable[..., Scenario]


@pytest.fixture
def scenario(
    make_daemon: Callable[..., Daemon], fault_api: Callable[..., Path], side: SideFile
) -> StartScenario:
    """start(api, env=..., project=..., state_dir=..., **daemon settings): a daemon of
    its own (make_daemon) with the fault handler (or `project`) deployed as `api`."""

    def start(
        api: str,
        env: dict[str, str] | None = None,
        project: Path | None = None,
        state_dir: Path | None = None,
        **settings: Any,
    ) -> Scenario:
        daemon = make_daemon(start=False, **settings)
        if state_dir is not None:
            daemon.state_dir = state_dir
        daemon.projects = [project or fault_api(api, env=env)]
        daemon.start()
        return Scenario(daemon, api, side)

    return start


def items_job(count: int, **fields: Any) -> dict[str, Any]:
    """A job of `count` one-item batches: item i is batch `<job>-<i + 1>`."""
    return {"item_list": {"items": list(range(count)), "batch_size": 1}, **fields}


def batch_key(job_id: str, item: int) -> str:
    return f"{job_id}-{item + 1}"


def job_status(daemon: Daemon, api: str, job_id: str) -> dict[str, Any]:
    status: dict[str, Any] = daemon.client.get_job(api, job_id)["job_status"]
    return status


def seconds(start: float) -> float:
    return round(time.monotonic() - start, 3)


# -- what batchd can tell about a SIGKILL ------------------------------------------------


def memory_events_readable() -> bool:
    """Whether batchd can tell OOM kills apart (cgroup v2 memory.events of its cgroup)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        if line.startswith("0::"):
            return (Path("/sys/fs/cgroup") / line[3:].lstrip("/") / "memory.events").exists()
    return False


def unexplained_sigkill_error() -> str:
    """What batchd reports for a SIGKILL it did not send (docs/reliability.md: OOM detection)."""
    return SIGKILL_ERROR if memory_events_readable() else OOM_ERROR
