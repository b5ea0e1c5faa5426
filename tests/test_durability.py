"""Nothing lost: daemon kill -9 and restart, SIGTERM drain, priorities, big admissions."""

from __future__ import annotations

import json
import signal
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import Daemon, wait_for, wait_job
from tests.test_lifecycle import pid_alive

Project = Callable[..., Path]

# Records every call, so the test can tell how often each batch really ran.
COUNTING_HANDLER = """
import os, time

class Handler:
    def __init__(self, config):
        self.calls = os.environ["CALLS"]
        self.delay = config.get("delay", 0.1)
        open(os.path.join(os.environ["PIDS"], str(os.getpid())), "w").close()

    def handle_batch(self, payload, batch_id):
        with open(self.calls, "a") as calls:
            calls.write(batch_id + "\\n")
        time.sleep(self.delay)
        return [item * 2 for item in payload]
"""


def counting_project(make_project: Project, tmp_path: Path, name: str, delay: float) -> Path:
    (tmp_path / "pids").mkdir(exist_ok=True)
    env = f'[handler.env]\nCALLS = "{tmp_path / "calls"}"\nPIDS = "{tmp_path / "pids"}"\n'
    return make_project(name, COUNTING_HANDLER, config={"delay": delay}, extra_toml=env)


def metrics(daemon: Daemon, api: str, job_id: str) -> dict[str, Any]:
    status: dict[str, Any] = daemon.client.get_job(api, job_id)["job_status"]
    return status


def test_daemon_kill_9_loses_nothing(daemon: Daemon, make_project: Project, tmp_path: Path) -> None:
    client = daemon.client
    client.deploy(counting_project(make_project, tmp_path, "durable", delay=0.2))
    items = list(range(30))
    job = client.submit("durable", {"workers": 2, "item_list": {"items": items, "batch_size": 1}})
    job_id = job["job_id"]
    wait_for(
        lambda: metrics(daemon, "durable", job_id)["batch_metrics"]["succeeded"] >= 4,
        what="some batches to succeed",
    )
    daemon.kill()
    # Workers die with the daemon: nothing orphaned keeps handling batches.
    pids = [int(p.name) for p in (tmp_path / "pids").iterdir()]
    wait_for(lambda: not any(pid_alive(pid) for pid in pids), what="orphaned workers to die")

    daemon.start()
    final = wait_job(daemon.client, "durable", job_id)
    assert final["status"] == "succeeded"
    assert final["batch_metrics"]["succeeded"] == 30
    assert final["batch_metrics"]["failed"] == 0
    results = {r["batch_id"]: r["result"] for r in daemon.client.results("durable", job_id)}
    assert results == {f"{job_id}-{i + 1}": [i * 2] for i in items}
    calls = (tmp_path / "calls").read_text().split()
    # Every batch ran; the ones cut off by the kill ran again and were charged an attempt.
    assert set(calls) == set(results)
    rerun = len(calls) - len(set(calls))
    # Each of the 2 workers held at most one lease at the kill, and each lease held is
    # charged once: one that had begun in its handler ran again; one the kill caught between
    # its lease and its handler (the daemon's commit of the lease, then the kill) never began
    # and is charged without a rerun.
    charged = final["batch_metrics"]["failed_attempts"]
    assert rerun <= charged <= 2


def test_sigterm_drains_in_flight_batches_and_exits_zero(
    daemon: Daemon, make_project: Project, tmp_path: Path
) -> None:
    client = daemon.client
    client.deploy(counting_project(make_project, tmp_path, "drain", delay=1.0))
    job = client.submit(
        "drain", {"workers": 2, "item_list": {"items": list(range(6)), "batch_size": 1}}
    )
    job_id = job["job_id"]
    wait_for(
        lambda: metrics(daemon, "drain", job_id)["batch_metrics"]["in_progress"] == 2,
        what="two batches in flight",
    )
    assert daemon.stop(signal.SIGTERM) == 0
    # The two in-flight batches finished during the drain; none was charged.
    daemon.start()
    status = metrics(daemon, "drain", job_id)
    assert status["batch_metrics"]["succeeded"] >= 2
    assert status["batch_metrics"]["failed_attempts"] == 0
    final = wait_job(daemon.client, "drain", job_id)
    assert final["status"] == "succeeded"
    assert final["batch_metrics"]["failed_attempts"] == 0
    calls = (tmp_path / "calls").read_text().split()
    assert sorted(calls) == sorted(f"{job_id}-{i}" for i in range(1, 7))


GATED_HANDLER = """
import os, time

class Handler:
    def __init__(self, config, job_spec):
        self.tag = config["tag"]

    def handle_batch(self, payload):
        with open(os.environ["ORDER"], "a") as order:
            order.write(self.tag + "\\n")
        while not os.path.exists(os.environ["GATE"]):
            time.sleep(0.01)
"""


def test_capacity_priority_then_age(
    make_daemon: Callable[..., Daemon], make_project: Project, tmp_path: Path
) -> None:
    daemon = make_daemon(max_workers=1)
    order, gate = tmp_path / "order", tmp_path / "gate"
    env = f'[handler.env]\nORDER = "{order}"\nGATE = "{gate}"\n'
    client = daemon.client
    client.deploy(make_project("gated", GATED_HANDLER, extra_toml=env))

    def submit(tag: str, priority: int) -> str:
        body = {
            "workers": 2,
            "priority": priority,
            "config": {"tag": tag},
            "item_list": {"items": [1], "batch_size": 1},
        }
        job_id: str = client.submit("gated", body)["job_id"]
        return job_id

    first = submit("first", 0)
    wait_for(lambda: order.exists() and order.read_text() == "first\n", what="first job to run")
    low, high, low2 = submit("low", 0), submit("high", 5), submit("low2", 0)
    for job_id in (low, high, low2):
        status = metrics(daemon, "gated", job_id)
        assert status["status"] == "pending"
        assert status["worker_counts"]["pending"] == 1
    running = metrics(daemon, "gated", first)
    assert running["status"] == "running"
    assert running["worker_counts"]["running"] == 1
    gate.touch()
    for job_id in (first, low, high, low2):
        assert wait_job(client, "gated", job_id)["status"] == "succeeded"
    assert order.read_text().split() == ["first", "high", "low", "low2"]


def test_big_admission_does_not_block_other_requests(daemon: Daemon, make_project: Project) -> None:
    client = daemon.client
    client.deploy(
        make_project(
            "bulk",
            """
            class Handler:
                def __init__(self, config):
                    pass

                def handle_batch(self, payload):
                    return None
            """,
        )
    )
    body = {"workers": 1, "item_list": {"items": list(range(400_000)), "batch_size": 1}}
    admitted: dict[str, Any] = {}
    submitter = threading.Thread(target=lambda: admitted.update(client.submit("bulk", body)))
    answered_meanwhile = 0
    submitter.start()
    try:
        while submitter.is_alive():
            with urllib.request.urlopen(daemon.url + "/healthz", timeout=30) as response:
                assert response.status == 200
            answered_meanwhile += submitter.is_alive()
    finally:
        submitter.join()
    assert admitted["total_batch_count"] == 400_000
    assert answered_meanwhile > 0
    client.stop_job("bulk", admitted["job_id"])


OOM_HANDLER = """
import os

class Handler:
    def __init__(self, config):
        self.cgroup = os.environ["OOM_CGROUP"]

    def handle_batch(self, payload):
        if payload == ["hog"]:
            with open(os.path.join(self.cgroup, "cgroup.procs"), "w") as procs:
                procs.write(str(os.getpid()))
            hog = []
            while True:
                hog.append(bytearray(16 * 1024 * 1024))
        return payload
"""


def test_kernel_oom_kill_is_reported_as_oom(
    make_daemon: Callable[..., Daemon], make_project: Project, memory_cgroup: Path
) -> None:
    daemon = make_daemon(max_worker_restarts=0)
    env = f'[handler.env]\nOOM_CGROUP = "{memory_cgroup}"\n'
    client = daemon.client
    client.deploy(make_project("hog", OOM_HANDLER, extra_toml=env))
    job = client.submit(
        "hog", {"max_receive_count": 1, "item_list": {"items": ["hog", "ok"], "batch_size": 1}}
    )
    final = wait_job(client, "hog", job["job_id"])
    assert final["status"] == "worker_oom"
    assert "OOM killer" in final["error"]
    (dead,) = list(client.failed("hog", job["job_id"]))
    assert dead["payload"] == ["hog"]
    assert "out of memory" in dead["error"]
    json.dumps(final)


def test_systemd_notify_ready_watchdog_stopping(
    make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    import socket

    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        listener.settimeout(30)
        daemon = make_daemon(start=False)
        daemon.env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "200000"}
        daemon.start()
        messages = [listener.recv(64).decode() for _ in range(4)]
        assert "READY=1" in messages
        assert messages.count("WATCHDOG=1") >= 2
        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGTERM)
        while (message := listener.recv(64).decode()) == "WATCHDOG=1":
            pass
        assert message == "STOPPING=1"
        assert daemon.stop() == 0


def test_second_sigterm_kills_workers_and_charges_nothing(
    make_daemon: Callable[..., Daemon], make_project: Project, tmp_path: Path
) -> None:
    daemon = make_daemon(worker_stop_grace=300)
    client = daemon.client
    client.deploy(counting_project(make_project, tmp_path, "stubborn", delay=600))
    job_id = client.submit("stubborn", {"item_list": {"items": [1], "batch_size": 1}})["job_id"]
    wait_for(
        lambda: metrics(daemon, "stubborn", job_id)["batch_metrics"]["in_progress"] == 1,
        what="the batch to start",
    )
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGTERM)
    wait_for(lambda: "draining workers" in daemon.output(), what="the drain to begin")
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(60) == 0
    daemon.process = None
    pids = [int(p.name) for p in (tmp_path / "pids").iterdir()]
    wait_for(lambda: not any(pid_alive(pid) for pid in pids), what="workers to die")
    daemon.start()
    status = metrics(daemon, "stubborn", job_id)
    assert status["batch_metrics"]["failed_attempts"] == 0
    assert status["status"] == "running"
    # The released batch is handed out again, still on its first attempt.
    wait_for(lambda: len((tmp_path / "calls").read_text().split()) == 2, what="redelivery")
    assert metrics(daemon, "stubborn", job_id)["batch_metrics"]["failed_attempts"] == 0
    daemon.kill()
