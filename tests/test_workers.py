"""GET /workers: live workers with their RSS, CPU and GPU memory, and the history of worker
exits with their cause (a crash, an OOM kill), from a real daemon with real workers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from batchd import constants
from batchd.observe.workers import (
    MIB,
    GpuMemory,
    UsageSampler,
    WorkerExitEvent,
    WorkerHistory,
    parse_compute_apps,
    read_proc_stat,
)
from batchd.pool.exits import ExitCause, exit_cause, signal_name
from tests.conftest import Daemon, wait_for, wait_job
from tests.test_cli import batchd

# "crash" exits the worker at once; "hog" eats memory until something stops it; "gate"
# waits for the file named by the job's config; anything else is echoed.
HANDLER = """
import os
import time


class Handler:
    def __init__(self, config):
        self.gate = config.get("gate")

    def handle_batch(self, payload):
        if payload == ["crash"]:
            os._exit(7)
        if payload == ["hog"]:
            hog = []
            while True:
                hog.append(bytearray(16 * 1024 * 1024))
        if payload == ["gate"]:
            while not os.path.exists(self.gate):
                time.sleep(0.02)
        return payload
"""

# nvidia-smi as the daemon runs it: no GPUs for -L; the compute apps a test writes.
FAKE_NVIDIA_SMI = """#!/bin/sh
[ "$1" = "-L" ] && exit 0
cat "$(dirname "$0")/compute-apps.csv"
"""


# -- pure parts -------------------------------------------------------------------------------


def test_exit_causes() -> None:
    assert exit_cause(0, oom=False, killed=False) is ExitCause.EXITED
    assert exit_cause(7, oom=False, killed=False) is ExitCause.CRASHED
    assert exit_cause(-signal.SIGSEGV, oom=False, killed=False) is ExitCause.SIGNALED
    assert exit_cause(-signal.SIGKILL, oom=True, killed=False) is ExitCause.OOM
    assert exit_cause(-signal.SIGTERM, oom=False, killed=True) is ExitCause.STOPPED
    init_failed = constants.WORKER_EXIT_INIT_FAILED
    assert exit_cause(init_failed, oom=False, killed=False) is ExitCause.INIT_FAILED
    # Once the Handler is up, that exit code is the handler's own.
    assert exit_cause(init_failed, oom=False, killed=False, ready=True) is ExitCause.CRASHED
    timeout = exit_cause(
        -signal.SIGKILL, oom=False, killed=False, death_cause=ExitCause.BATCH_TIMEOUT
    )
    assert timeout is ExitCause.BATCH_TIMEOUT
    assert signal_name(-signal.SIGKILL) == "SIGKILL" and signal_name(3) is None


def test_history_keeps_the_newest() -> None:
    history = WorkerHistory(size=3)
    for pid in range(5):
        history.record(WorkerExitEvent(0.0, "api", "job", 0, pid, "crashed", 1, None, "", None))
    assert [event.pid for event in history.newest_first()] == [4, 3, 2]


def test_compute_apps_and_a_missing_nvidia_smi() -> None:
    listing = "123, 300\n123, 12\nNo running processes found\n456, [N/A]\n"
    assert parse_compute_apps(listing) == {123: 312 * MIB}
    assert asyncio.run(GpuMemory().by_worker("no-such-nvidia-smi", [os.getpid()])) is None


def test_usage_is_read_from_proc_at_most_once_a_second() -> None:
    now = [100.0]
    sampler = UsageSampler(clock=lambda: now[0])
    first = sampler.sample([os.getpid()])[os.getpid()]
    assert abs(first.rss_bytes - _vm_rss(os.getpid())) < 8 * MIB
    deadline = sum(os.times()[:2]) + 0.2
    while sum(os.times()[:2]) < deadline:  # burn CPU for the next read to see
        pass
    assert sampler.sample([os.getpid()])[os.getpid()] is first  # cached: under a second
    now[0] += 1.0
    busy = sampler.sample([os.getpid()])[os.getpid()]
    # 0.2 s of CPU over one (fake) second: at least 20 % of a core.
    assert busy.cpu_percent >= 19.0
    assert sampler.sample([2**22 + 1]) == {}  # no such process


def _vm_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


# -- a real daemon ----------------------------------------------------------------------------


@pytest.fixture
def fake_nvidia_smi(tmp_path: Path) -> Path:
    folder = tmp_path / "fake-gpu"
    folder.mkdir()
    program = folder / "nvidia-smi"
    program.write_text(FAKE_NVIDIA_SMI)
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    (folder / "compute-apps.csv").write_text("")
    return program


def events_of(daemon: Daemon, job_id: str) -> list[dict[str, Any]]:
    return [e for e in daemon.client.workers()["events"] if e["job_id"] == job_id]


def test_worker_exits_and_live_usage(
    make_daemon: Callable[..., Daemon],
    make_project: Callable[..., Path],
    fake_nvidia_smi: Path,
    tmp_path: Path,
) -> None:
    daemon = make_daemon(nvidia_smi=str(fake_nvidia_smi))
    client = daemon.client
    client.deploy(make_project("crashy", HANDLER, extra_toml='[compute]\nmem = "96M"\n'))

    # A live worker, held mid-batch (the first /workers read: nvidia-smi's answer is
    # cached): its RSS as /proc has it, its batch, its GPU memory.
    gate = tmp_path / "gate"
    held = client.submit(
        "crashy", {"config": {"gate": str(gate)}, "item_list": {"items": ["gate"], "batch_size": 1}}
    )
    pid = wait_for(
        lambda: next(
            (w["pid"] for w in client.status()["workers"] if w["job_id"] == held["job_id"]),
            None,
        ),
        what="the held job's worker",
    )
    (fake_nvidia_smi.parent / "compute-apps.csv").write_text(f"{pid}, 300\n1, 50\n")
    live = wait_for(
        lambda: next((w for w in client.workers()["workers"] if w["batch_id"] is not None), None),
        what="the worker on its batch",
    )
    assert live["pid"] == pid and live["state"] == "running"
    assert live["batch_id"].startswith(held["job_id"])
    assert 5 * MIB < live["rss_bytes"] < 96 * MIB

    def rss_as_proc_has_it() -> bool:
        # A read between two of /proc's, within a page table's slack (it may be cached
        # for up to a second, and the worker may still be growing).
        before = _vm_rss(pid)
        (worker,) = client.workers()["workers"]
        after = _vm_rss(pid)
        return min(before, after) - MIB <= worker["rss_bytes"] <= max(before, after) + MIB

    wait_for(rss_as_proc_has_it, timeout=10, what="the RSS /proc has")
    assert read_proc_stat(pid) is not None
    assert live["cpu_percent"] is not None and live["cpu_percent"] >= 0
    assert live["gpu_memory_bytes"] == 300 * MIB
    assert abs(datetime.fromisoformat(live["started_at"]).timestamp() - time.time()) < 60
    # A crash: the exit code, and the restart it brings.
    body = {"max_receive_count": 1, "item_list": {"items": ["crash", "ok"], "batch_size": 1}}
    crashed = client.submit("crashy", {**body, "workers": 1})
    wait_job(client, "crashy", crashed["job_id"])
    crash = next(e for e in events_of(daemon, crashed["job_id"]) if e["cause"] == "crashed")
    assert crash["exit_code"] == 7 and crash["signal"] is None
    assert crash["api_name"] == "crashy" and crash["pid"] > 0
    assert crash["restart_in"] is not None and crash["restart_in"] > 0
    assert "exited with code 7" in crash["reason"]
    assert abs(datetime.fromisoformat(crash["time"]).timestamp() - time.time()) < 60

    # An OOM kill: the kernel's in the worker's memory cgroup, or (without cgroups) the
    # MemoryError over its RLIMIT_AS.
    body["item_list"]["items"] = ["hog"]
    hogged = client.submit("crashy", body)
    wait_job(client, "crashy", hogged["job_id"])
    (oom,) = [e for e in events_of(daemon, hogged["job_id"]) if e["cause"] == "oom"]
    assert oom["signal"] == "SIGKILL" or oom["exit_code"] == constants.WORKER_EXIT_OUT_OF_MEMORY

    gate.touch()
    wait_job(client, "crashy", held["job_id"])
    # It exits once its job is done: asked to, with code 0.
    wait_for(
        lambda: any(e["cause"] == "exited" for e in events_of(daemon, held["job_id"])),
        what="the held job's worker's exit",
    )
    (exited,) = events_of(daemon, held["job_id"])
    assert exited["exit_code"] == 0 and exited["restart_in"] is None and exited["pid"] == pid

    # The CLI: both tables, filtered by API; JSON as the daemon answers it.
    shown = batchd(daemon.url, "workers", "--api", "crashy")
    assert shown.returncode == 0, shown.stderr
    assert "no live workers" in shown.stdout
    (crash_line,) = [
        line
        for line in shown.stdout.splitlines()
        if crashed["job_id"] in line and "crashed" in line
    ]
    assert " 7 " in crash_line and "exited with code 7" in crash_line
    assert "oom" in shown.stdout
    as_json = json.loads(batchd(daemon.url, "workers", "-o", "json", "--events", "1").stdout)
    assert as_json["workers"] == [] and len(as_json["events"]) == 1


def test_a_handler_exiting_with_the_init_failure_code_mid_batch_is_a_crash(
    make_daemon: Callable[..., Daemon], make_project: Callable[..., Path], tmp_path: Path
) -> None:
    """os._exit(3) from handle_batch (3 is the worker's own "could not load the Handler"
    code) once the Handler is up: its batch is charged and runs again at once, not after
    lease_timeout (it used to wait for the lease to run out, 10 minutes here)."""
    daemon = make_daemon(lease_timeout=600.0)
    client = daemon.client
    client.deploy(make_project("exits3", EXIT_3_ONCE))
    marker = tmp_path / "exited-once"
    body = {"workers": 1, "config": {"marker": str(marker)}}
    body["item_list"] = {"items": ["a", "b"], "batch_size": 1}
    job_id = client.submit("exits3", body)["job_id"]
    status = wait_job(client, "exits3", job_id, timeout=60)
    assert marker.exists()
    assert status["status"] == "succeeded"
    assert status["batch_metrics"]["failed_attempts"] == 1
    (crash,) = [e for e in events_of(daemon, job_id) if e["exit_code"] == 3]
    assert crash["cause"] == "crashed" and crash["restart_in"] is not None


# Exits with code 3 on its first batch only (the file named by the job's config marks it).
EXIT_3_ONCE = """
import os


class Handler:
    def __init__(self, config):
        self.marker = config["marker"]

    def handle_batch(self, payload):
        if not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(3)
        return payload
"""
