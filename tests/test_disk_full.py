"""A full disk is answered with 507, stores nothing partial, and heals when space returns."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE, Daemon, wait_job


@pytest.fixture
def tiny_fs(make_tiny_fs: Callable[[int], Path]) -> Path:
    return make_tiny_fs(8)


def post(daemon: Daemon, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(
        f"{daemon.url}/batch/hello", data=json.dumps(body).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_disk_full_is_507_and_recovers(make_daemon: Callable[..., Daemon], tiny_fs: Path) -> None:
    daemon = make_daemon(start=False)
    daemon.state_dir = tiny_fs / "state"
    daemon.start()
    client = daemon.client
    client.deploy(EXAMPLE)
    filler = tiny_fs / "filler"
    free = os.statvfs(tiny_fs).f_bavail * os.statvfs(tiny_fs).f_frsize
    filler.write_bytes(b"\0" * max(0, free - 512 * 1024))

    big = {"item_list": {"items": ["x" * 1000] * 5000, "batch_size": 1}}
    status, body = post(daemon, big)
    assert status == 507, body
    assert "full" in str(body["error"])
    # Nothing half-admitted, and the daemon goes on answering.
    assert client.list_jobs("hello") == []
    with urllib.request.urlopen(f"{daemon.url}/healthz", timeout=30) as response:
        assert response.status == 200

    filler.unlink()
    status, job = post(daemon, {"item_list": {"items": list(range(100)), "batch_size": 10}})
    assert status == 200, job
    assert job["total_batch_count"] == 10
    final = wait_job(client, "hello", str(job["job_id"]))
    assert final["status"] == "succeeded"
    assert final["batch_metrics"]["succeeded"] == 10


def test_disk_full_while_spooling_a_file_source_is_507(
    make_daemon: Callable[..., Daemon], tiny_fs: Path, inputs_dir: Path
) -> None:
    """A delimited_files job's chunks wait in a temporary file in the state directory:
    a full disk there is a 507 that stores nothing, and leaves no file behind."""
    daemon = make_daemon(start=False)
    daemon.state_dir = tiny_fs / "state"
    daemon.start()
    client = daemon.client
    client.deploy(EXAMPLE)
    line = json.dumps("x" * 1000) + "\n"
    (inputs_dir / "big.jsonl").write_text(line * 12_000)
    before = sorted(path.name for path in daemon.state_dir.iterdir())

    status, body = post(daemon, {"delimited_files": {"paths": [str(inputs_dir)], "batch_size": 10}})

    assert status == 507, body
    assert client.list_jobs("hello") == []
    assert sorted(path.name for path in daemon.state_dir.iterdir()) == before
    (inputs_dir / "big.jsonl").write_text(line * 100)
    status, job = post(daemon, {"delimited_files": {"paths": [str(inputs_dir)], "batch_size": 10}})
    assert status == 200 and job["total_batch_count"] == 10, job
