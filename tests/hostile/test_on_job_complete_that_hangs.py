"""A handler's on_job_complete never returns.

It once held its job running for ever. Past on_job_complete_timeout its worker (and what
the hook started) is killed, and the job ends with the status its batches decided,
saying why in its error and in its log."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Daemon, wait_for, wait_job

TIMEOUT = 2.0

HANDLER = """
import os, subprocess, sys, time

class Handler:
    def handle_batch(self, payload):
        return payload

    def on_job_complete(self):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        with open(os.environ["HOOK_PIDS"], "w") as pids:
            pids.write(f"{os.getpid()} {child.pid}")
        time.sleep(3600)
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_on_job_complete_that_hangs_is_killed_at_its_timeout(
    make_daemon: Callable[..., Daemon], make_project: Callable[..., Path], tmp_path: Path
) -> None:
    daemon = make_daemon(on_job_complete_timeout=TIMEOUT)
    pids_file = tmp_path / "hook-pids"
    client = daemon.client
    client.deploy(make_project("hung-hook", HANDLER, files={".env": f"HOOK_PIDS={pids_file}\n"}))
    job_id = client.submit(
        "hung-hook", {"workers": 1, "item_list": {"items": [1, 2, 3], "batch_size": 1}}
    )["job_id"]
    final = wait_job(client, "hung-hook", job_id, timeout=60)

    assert final["status"] == "succeeded", final
    assert final["batch_metrics"]["succeeded"] == 3
    expected = (
        f"on_job_complete did not finish within {TIMEOUT:g}s (on_job_complete_timeout); "
        "its worker was killed"
    )
    assert final["error"] == expected
    assert expected in daemon.job_log(job_id)
    worker, child = map(int, pids_file.read_text().split())
    assert worker != os.getpid()
    wait_for(lambda: not alive(worker) and not alive(child), 30, "the hook's processes gone")
