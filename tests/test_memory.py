"""[compute] mem: a worker over its bound is OOM-killed inside its own cgroup."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from batchd.apis.spec import ComputeSpec, parse_size
from batchd.pool.memlimit import V1_GROUP_PREFIX, MemoryLimiter
from tests.conftest import Daemon, wait_job


def test_sizes() -> None:
    assert parse_size("512M") == 512 * 1024**2
    assert parse_size("8G") == 8 * 1024**3
    assert parse_size("1.5GiB") == int(1.5 * 1024**3)
    assert parse_size("33554432") == 32 * 1024**2
    for bad in ("lots", "8X", "-1G", "1M"):
        with pytest.raises(ValueError):
            parse_size(bad)
    assert ComputeSpec(mem="64M").mem_bytes == 64 * 1024**2
    assert ComputeSpec().mem_bytes is None


HOG = """
class Handler:
    def __init__(self, config):
        pass

    def handle_batch(self, payload):
        if payload == ["hog"]:
            hog = []
            while True:
                hog.append(bytearray(16 * 1024 * 1024))
        return payload
"""


@pytest.mark.skipif(
    not MemoryLimiter().uses_cgroups, reason="no writable cgroup v1 memory hierarchy here"
)
def test_worker_over_its_mem_is_oom_killed_in_its_cgroup(
    make_daemon: Callable[..., Daemon], make_project: Callable[..., Path]
) -> None:
    daemon = make_daemon(max_worker_restarts=0)
    client = daemon.client
    client.deploy(make_project("bounded", HOG, extra_toml='[compute]\nmem = "96M"\n'))
    job = client.submit(
        "bounded", {"max_receive_count": 1, "item_list": {"items": ["ok", "hog"], "batch_size": 1}}
    )
    final = wait_job(client, "bounded", job["job_id"])
    assert final["status"] == "worker_oom"
    assert final["batch_metrics"]["succeeded"] == 1
    (dead,) = list(client.failed("bounded", job["job_id"]))
    assert dead["payload"] == ["hog"]
    assert "OOM killer" in dead["error"]
    # Every per-worker group is gone once its worker is.
    base = MemoryLimiter().base
    assert base is not None
    assert not list(base.glob("batchd-worker-*"))


@pytest.mark.skipif(
    not MemoryLimiter().uses_cgroups, reason="no writable cgroup v1 memory hierarchy here"
)
def test_a_daemon_removes_worker_groups_orphaned_by_a_killed_daemon(
    make_daemon: Callable[..., Daemon],
) -> None:
    base = MemoryLimiter().base
    assert base is not None
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = base / f"{V1_GROUP_PREFIX}{dead.pid}-dead"
    # A group whose worker lives (this test's own pid stands in for it) is in use.
    in_use = base / f"{V1_GROUP_PREFIX}{os.getpid()}-live"
    orphan.mkdir()
    in_use.mkdir()
    try:
        make_daemon()
        assert not orphan.exists()
        assert in_use.exists()
    finally:
        for group in (orphan, in_use):
            if group.exists():
                group.rmdir()
