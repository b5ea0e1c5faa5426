"""Serving on a Unix socket, and one daemon per state dir."""

from __future__ import annotations

import grp
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from batchd.client import Client
from testkit.launcher import free_port
from tests.conftest import EXAMPLE, Daemon


@pytest.fixture
def unix_daemon(tmp_path: Path) -> Iterator[tuple[Client, Path]]:
    # Unix socket paths are limited to ~107 bytes: keep it short.
    socket_dir = Path(f"/tmp/bd-{os.getpid()}-{tmp_path.name[-8:]}")
    socket_path = socket_dir / "s.sock"
    group = grp.getgrgid(os.getgid()).gr_name
    daemon = Daemon(
        state_dir=tmp_path / "state",
        config_path=tmp_path / "c.toml",
        config={"socket_mode": "0640", "socket_group": group, "max_workers": 2},
        log_path=tmp_path / "daemon.log",
        socket_path=socket_path,
        client_timeout=60,
    )
    try:
        daemon.start()
        yield daemon.client, socket_path
    finally:
        daemon.close(timeout=30)
        socket_path.unlink(missing_ok=True)
        socket_dir.rmdir()


def test_serves_on_a_unix_socket_with_its_mode_and_group(
    unix_daemon: tuple[Client, Path], make_project: Callable[..., Path]
) -> None:
    client, socket_path = unix_daemon
    info = socket_path.stat()
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o640
    assert info.st_gid == os.getgid()
    client.deploy(EXAMPLE)
    # A handler reaches the daemon through the same socket (BATCHD_URL is http+unix).
    client.deploy(
        make_project(
            "asker",
            "import batchd\nclass Handler:\n    def __init__(self, config): pass\n"
            "    def handle_batch(self, payload):\n"
            "        return [a['name'] for a in batchd.client().list_apis()]\n",
        )
    )
    job = client.submit("asker", {"item_list": {"items": [1], "batch_size": 1}})
    assert client.wait("asker", job["job_id"], poll_interval=0.05, timeout=60)["status"] == (
        "succeeded"
    )
    assert [r["result"] for r in client.results("asker", job["job_id"])] == [["asker", "hello"]]


def test_a_second_daemon_on_the_same_state_dir_is_refused(
    make_daemon: Callable[..., Daemon],
) -> None:
    daemon = make_daemon()
    second = subprocess.run(
        [
            sys.executable,
            "-m",
            "batchd",
            "serve",
            "--config",
            str(daemon.config_path),
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--state-dir",
            str(daemon.state_dir),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 2
    assert "another batchd is already using" in second.stderr
    assert daemon.client.list_apis() == []
