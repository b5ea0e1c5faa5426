"""The daemon as its service user: every feature a production box uses, end to end.

Nothing here runs the daemon as root. Handlers record what they saw (uid, devices,
interpreter) in their results, so each test checks values the workers really had.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Daemon, wait_for, wait_job
from tests.service_user.conftest import ServiceBox, owners, process_uid

Project = Callable[..., Path]

pytestmark = pytest.mark.timeout(300)

# Negative items fail until the fix file exists; every call is recorded under out/calls.
HANDLER = """
import os, time
from batchd import logger

class Handler:
    def __init__(self, config):
        self.out = config["out"]
        self.delay = config.get("delay", 0.0)
        # Cortex handlers write beside themselves (its ONNX example downloads its model so).
        with open("written-in-init", "w") as mine:
            mine.write(str(os.getpid()))

    def handle_batch(self, payload, batch_id):
        with open(os.path.join(self.out, "calls"), "a") as calls:
            calls.write(batch_id + "\\n")
        logger.info("handling", extra={"batch": batch_id})
        time.sleep(self.delay)
        if payload[0] < 0 and not os.path.exists(os.path.join(self.out, "fixed")):
            raise ValueError(f"negative item {payload[0]}")
        with open("written-in-init") as mine:
            own = mine.read() == str(os.getpid())
        return {"double": payload[0] * 2, "uid": os.getuid(), "own_file": own}
"""


def deploy(box: ServiceBox, daemon: Daemon, make_project: Project, **config: Any) -> dict[str, Any]:
    project = make_project("svc", HANDLER, config={"out": str(box.out), **config})
    return daemon.client.deploy(project)


def results(daemon: Daemon, job_id: str) -> dict[str, Any]:
    return {r["batch_id"]: r["result"] for r in daemon.client.results("svc", job_id)}


def assert_state_is_the_users(box: ServiceBox, daemon: Daemon) -> None:
    mode = stat.S_IMODE(daemon.state_dir.stat().st_mode)
    assert mode == 0o700, oct(mode)
    foreign = {path: uid for path, uid in owners(daemon.state_dir).items() if uid != box.user.uid}
    assert foreign == {}


def test_deploy_jobs_dead_letters_retry_and_logs(
    service_box: ServiceBox, make_project: Project
) -> None:
    daemon = service_box.daemon()
    assert daemon.process is not None
    assert process_uid(daemon.process.pid) == service_box.user.uid

    first = deploy(service_box, daemon, make_project)
    again = deploy(service_box, daemon, make_project)
    changed = deploy(service_box, daemon, make_project, delay=0.0)
    assert (first["version"], again["version"], changed["version"]) == (1, 1, 2)

    client = daemon.client
    job = client.submit(
        "svc",
        {
            "workers": 2,
            "max_receive_count": 1,
            "item_list": {"items": [1, 2, -3, 4], "batch_size": 1},
        },
    )
    job_id = job["job_id"]
    final = wait_job(client, "svc", job_id)
    assert final["status"] == "completed_with_failures", json.dumps(final)
    uid = service_box.user.uid
    good = {"uid": uid, "own_file": True}
    assert results(daemon, job_id) == {
        f"{job_id}-1": {"double": 2, **good},
        f"{job_id}-2": {"double": 4, **good},
        f"{job_id}-4": {"double": 8, **good},
    }
    (dead,) = list(client.failed("svc", job_id))
    assert dead["payload"] == [-3]
    assert "negative item -3" in dead["error"]
    logged = [r for r in client.stream_job_logs("svc", job_id) if r.get("message") == "handling"]
    assert sorted(r["batch"] for r in logged) == sorted(f"{job_id}-{i}" for i in range(1, 5))

    (service_box.out / "fixed").touch()
    retry = client.retry("svc", job_id)
    retried = wait_job(client, "svc", retry["job_id"])
    assert retried["status"] == "succeeded"
    assert [r["result"]["double"] for r in client.results("svc", retry["job_id"])] == [-6]
    assert_state_is_the_users(service_box, daemon)


def test_stop_drain_restart_and_kill_9_lose_nothing(
    service_box: ServiceBox, make_project: Project
) -> None:
    daemon = service_box.daemon()
    deploy(service_box, daemon, make_project, delay=0.1)
    client = daemon.client
    items = list(range(1, 31))
    body = {"workers": 2, "item_list": {"items": items, "batch_size": 1}}

    def succeeded(job_id: str) -> int:
        status = daemon.client.get_job("svc", job_id)["job_status"]
        return int(status["batch_metrics"]["succeeded"])

    def expected(job_id: str) -> set[str]:
        return {f"{job_id}-{i}" for i in items}

    # A stop signal drains; the next start resumes the job where it stood.
    drained = client.submit("svc", body)["job_id"]
    wait_for(lambda: succeeded(drained) >= 3, what="some batches before the drain")
    assert daemon.stop(signal.SIGTERM) == 0
    daemon.start()
    assert wait_job(daemon.client, "svc", drained)["status"] == "succeeded"
    assert set(results(daemon, drained)) == expected(drained)

    # kill -9 of the daemon: workers die with it and the restart loses nothing.
    killed = daemon.client.submit("svc", body)["job_id"]
    wait_for(lambda: succeeded(killed) >= 3, what="some batches before the kill")
    daemon.kill()
    daemon.start()
    final = wait_job(daemon.client, "svc", killed)
    assert final["status"] == "succeeded"
    assert set(results(daemon, killed)) == expected(killed)

    # DELETE stops a running job.
    stopped = daemon.client.submit("svc", body)["job_id"]
    wait_for(lambda: succeeded(stopped) >= 1, what="the job to run")
    assert daemon.client.stop_job("svc", stopped) == {"message": f"stopped job {stopped}"}
    assert wait_job(daemon.client, "svc", stopped)["status"] == "stopped"

    calls = (service_box.out / "calls").read_text().split()
    assert set(calls) >= expected(drained) | expected(killed)
    assert_state_is_the_users(service_box, daemon)


GPU_HANDLER = """
import json, os, sys, time

class Handler:
    def __init__(self, config):
        out = config["out"]
        with open(os.path.join(out, "w-" + str(os.getpid())), "w") as f:
            json.dump(os.environ.get("CUDA_VISIBLE_DEVICES"), f)
        # Both workers must be up at once, so each holds a GPU while the other starts.
        deadline = time.monotonic() + 60
        while len([n for n in os.listdir(out) if n.startswith("w-")]) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError("the second worker never started")
            time.sleep(0.01)

    def handle_batch(self, payload):
        return [os.environ.get("CUDA_VISIBLE_DEVICES"), sys.prefix, os.getuid()]
"""


def test_gpu_pinning_and_a_per_api_venv(service_box: ServiceBox, make_project: Project) -> None:
    user = service_box.user
    nvidia_smi = service_box.home / "nvidia-smi"
    nvidia_smi.write_text(
        "#!/bin/sh\n"
        'echo "GPU 0: NVIDIA Fake H100 (UUID: GPU-aaaa)"\n'
        'echo "GPU 1: NVIDIA Fake H100 (UUID: GPU-bbbb)"\n'
    )
    nvidia_smi.chmod(0o755)
    venv = service_box.home / "api-venv"
    created = user.run(user.base_python, "-m", "venv", "--without-pip", str(venv))
    assert created.returncode == 0, created.stderr
    project = make_project(
        "svc",
        GPU_HANDLER,
        config={"out": str(service_box.out)},
        extra_toml=f"python = {json.dumps(str(venv / 'bin' / 'python'))}\n[compute]\ngpu = 1\n",
    )
    daemon = service_box.daemon(nvidia_smi=str(nvidia_smi))
    daemon.client.deploy(project)
    job_id = daemon.client.submit(
        "svc", {"workers": 2, "item_list": {"items": list(range(8)), "batch_size": 1}}
    )["job_id"]
    assert wait_job(daemon.client, "svc", job_id)["status"] == "succeeded"
    seen = {
        name: json.loads((service_box.out / name).read_text())
        for name in os.listdir(service_box.out)
    }
    assert sorted(seen.values()) == ["0", "1"]
    for pid in (int(name[2:]) for name in seen):
        assert not Path(f"/proc/{pid}").exists() or process_uid(pid) == user.uid
    answers = {tuple(r["result"]) for r in daemon.client.results("svc", job_id)}
    assert {prefix for _, prefix, _ in answers} == {str(venv)}
    assert {uid for _, _, uid in answers} == {user.uid}
    assert {gpu for gpu, _, _ in answers} <= {"0", "1"}
    assert_state_is_the_users(service_box, daemon)


def test_a_state_dir_owned_by_someone_else_is_refused(service_box: ServiceBox) -> None:
    daemon = service_box.daemon(start=False)
    daemon.state_dir.mkdir(mode=0o700)  # root's, as a stray `sudo batchd serve` leaves it
    result = subprocess.run(
        [
            *service_box.user.setpriv(),
            str(service_box.user.python),
            "-m",
            "batchd",
            "serve",
            "--config",
            str(daemon.config_path),
            "--state-dir",
            str(daemon.state_dir),
            "--listen",
            f"127.0.0.1:{daemon.port}",
        ],
        env=dict(os.environ, PYTHONPATH=str(service_box.user.pythonpath)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert f"state_dir: {daemon.state_dir} belongs to uid 0" in result.stderr
