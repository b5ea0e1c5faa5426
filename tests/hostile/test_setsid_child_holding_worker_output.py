"""A handler starts a process in a session of its own that keeps the worker's stdout.

Without a cgroup to reap it (cgroup v1, RLIMIT_AS, no limit at all), that process held
the worker's output pipes open after the worker exited, and Python 3.11's Process.wait()
waited for them: the worker was never reaped, its slot never freed, and with one slot
the next job never started."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Daemon, wait_job

Project = Callable[..., Path]

HANDLER = """
import os, subprocess, sys

class Handler:
    def __init__(self, config):
        self.pids = config["pids"]

    def handle_batch(self, payload):
        if payload == ["escape"]:
            # Inherits stdout and stderr, and leaves the worker's process group.
            child = subprocess.Popen(
                [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
            )
            with open(os.path.join(self.pids, str(child.pid)), "w"):
                pass
        return payload
"""


def test_setsid_child_holding_worker_output(
    make_daemon: Callable[..., Daemon], make_project: Project, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    daemon = make_daemon(max_workers=1)
    client = daemon.client
    client.deploy(make_project("escapee", HANDLER, config={"pids": str(pids)}))
    try:
        first = client.submit(
            "escapee", {"workers": 1, "item_list": {"items": ["escape"], "batch_size": 1}}
        )
        assert wait_job(client, "escapee", first["job_id"])["status"] == "succeeded"
        (escaped,) = [int(p.name) for p in pids.iterdir()]
        assert Path(f"/proc/{escaped}").exists()
        # The one slot must come free although the escapee still holds the old pipes.
        second = client.submit(
            "escapee", {"workers": 1, "item_list": {"items": ["a", "b"], "batch_size": 1}}
        )
        final = wait_job(client, "escapee", second["job_id"], timeout=60)
        assert final["status"] == "succeeded"
        results = [r["result"] for r in client.results("escapee", second["job_id"])]
        assert sorted(results) == [["a"], ["b"]]
    finally:
        for pid in (int(p.name) for p in pids.iterdir()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
