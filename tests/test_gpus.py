"""GPU pinning with a fake nvidia-smi: each worker sees only its own GPUs."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from batchd.client import BatchdError
from batchd.config import DaemonConfig
from batchd.pool.gpus import detect_gpus
from tests.conftest import Daemon, wait_for, wait_job

Project = Callable[..., Path]

GPU_HANDLER = """
import json, os, time

class Handler:
    def __init__(self, config):
        pass

    def handle_batch(self, payload):
        with open(os.environ["SEEN"], "a") as seen:
            seen.write(json.dumps([os.getpid(), os.environ["CUDA_VISIBLE_DEVICES"]]) + "\\n")
        while not os.path.exists(os.environ["GATE"]):
            time.sleep(0.01)
        return os.environ["CUDA_VISIBLE_DEVICES"]
"""


@pytest.fixture
def fake_nvidia_smi(tmp_path: Path) -> Path:
    script = tmp_path / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\n"
        'echo "GPU 0: NVIDIA Fake H100 (UUID: GPU-aaaa)"\n'
        'echo "GPU 1: NVIDIA Fake H100 (UUID: GPU-bbbb)"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_detection(fake_nvidia_smi: Path, tmp_path: Path) -> None:
    assert detect_gpus(DaemonConfig(nvidia_smi=str(fake_nvidia_smi))) == [0, 1]
    assert detect_gpus(DaemonConfig(nvidia_smi=str(tmp_path / "missing"))) == []
    assert detect_gpus(DaemonConfig(gpus=[3, 1, 3])) == [1, 3]


def gpu_project(make_project: Project, tmp_path: Path, name: str, gpu: int) -> Path:
    env = f'[handler.env]\nSEEN = "{tmp_path / name}.seen"\nGATE = "{tmp_path / "gate"}"\n'
    return make_project(name, GPU_HANDLER, extra_toml=env + f"[compute]\ngpu = {gpu}\n")


def seen(tmp_path: Path, name: str) -> list[list[Any]]:
    path = tmp_path / f"{name}.seen"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_each_worker_gets_its_own_gpu_and_jobs_wait_for_free_ones(
    make_daemon: Callable[..., Daemon], make_project: Project, tmp_path: Path, fake_nvidia_smi: Path
) -> None:
    daemon = make_daemon(nvidia_smi=str(fake_nvidia_smi), max_workers=4)
    client = daemon.client
    client.deploy(gpu_project(make_project, tmp_path, "gpuapi", gpu=1))
    client.deploy(gpu_project(make_project, tmp_path, "cpuapi", gpu=0))
    job = client.submit(
        "gpuapi", {"workers": 3, "item_list": {"items": [1, 2, 3], "batch_size": 1}}
    )
    wait_for(lambda: len(seen(tmp_path, "gpuapi")) == 2, what="two GPU workers")
    status = client.get_job("gpuapi", job["job_id"])["job_status"]
    # Two GPUs, so two workers; the third waits.
    assert sorted(w["gpus"] for w in status["worker_details"]) == [[0], [1]]
    assert status["worker_counts"]["pending"] == 1
    assert sorted(device for _, device in seen(tmp_path, "gpuapi")) == ["0", "1"]

    second = client.submit("gpuapi", {"item_list": {"items": [9], "batch_size": 1}})
    cpu = client.submit("cpuapi", {"item_list": {"items": [1], "batch_size": 1}})
    wait_for(lambda: len(seen(tmp_path, "cpuapi")) == 1, what="the CPU job to run")
    assert seen(tmp_path, "cpuapi")[0][1] == ""
    assert client.get_job("gpuapi", second["job_id"])["job_status"]["status"] == "pending"

    (tmp_path / "gate").touch()
    for api, job_id in (
        ("gpuapi", job["job_id"]),
        ("gpuapi", second["job_id"]),
        ("cpuapi", cpu["job_id"]),
    ):
        assert wait_job(client, api, job_id)["status"] == "succeeded"
    devices = [device for _, device in seen(tmp_path, "gpuapi")]
    assert len(devices) == 4 and set(devices) == {"0", "1"}


def test_api_needing_more_gpus_than_the_machine_has_is_refused(
    make_daemon: Callable[..., Daemon], make_project: Project, tmp_path: Path, fake_nvidia_smi: Path
) -> None:
    daemon = make_daemon(nvidia_smi=str(fake_nvidia_smi))
    client = daemon.client
    client.deploy(gpu_project(make_project, tmp_path, "greedy", gpu=3))
    with pytest.raises(BatchdError) as refused:
        client.submit("greedy", {"item_list": {"items": [1], "batch_size": 1}})
    assert refused.value.status == 422
    assert refused.value.field == "compute.gpu"
    assert "needs 3 GPU(s) per worker; this machine has 2" in refused.value.message
    assert client.list_jobs("greedy") == []


def test_explicit_gpu_list(
    make_daemon: Callable[..., Daemon], make_project: Project, tmp_path: Path
) -> None:
    daemon = make_daemon(gpus=[5])
    client = daemon.client
    client.deploy(gpu_project(make_project, tmp_path, "pinned", gpu=1))
    (tmp_path / "gate").touch()
    job = client.submit("pinned", {"item_list": {"items": [1], "batch_size": 1}})
    assert wait_job(client, "pinned", job["job_id"])["status"] == "succeeded"
    assert [r["result"] for r in client.results("pinned", job["job_id"])] == ["5"]


def test_workers_are_recycled_after_max_batches(
    make_daemon: Callable[..., Daemon], make_project: Project, tmp_path: Path
) -> None:
    daemon = make_daemon(max_batches_per_worker=2)
    client = daemon.client
    client.deploy(
        make_project(
            "leaky",
            "import os\nclass Handler:\n    def __init__(self, config): pass\n"
            "    def handle_batch(self, payload): return os.getpid()\n",
        )
    )
    job = client.submit("leaky", {"item_list": {"items": list(range(6)), "batch_size": 1}})
    assert wait_job(client, "leaky", job["job_id"])["status"] == "succeeded"
    pids = [r["result"] for r in client.results("leaky", job["job_id"])]
    assert len(pids) == 6
    assert [pids.count(pid) for pid in dict.fromkeys(pids)] == [2, 2, 2]
