"""STATUS= over systemd's notify socket: what `systemctl status batchd` shows, from a real
daemon talking to a datagram socket the test binds."""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable
from pathlib import Path

from batchd.daemon.sdnotify import status_line
from tests.conftest import Daemon

# Every batch waits until the file named by the job's config `gate` exists.
GATED = """
import os
import time


class Handler:
    def __init__(self, config):
        self.gate = config["gate"]

    def handle_batch(self, payload):
        while not os.path.exists(self.gate):
            time.sleep(0.02)
        return payload
"""


def test_status_line_wording() -> None:
    assert status_line(1, 1, 0, 0, 4) == "1 job active, 1 batch queued, 0 leased, 0/4 workers busy"
    assert (
        status_line(3, 1204, 4, 4, 4)
        == "3 jobs active, 1,204 batches queued, 4 leased, 4/4 workers busy"
    )


def receive_until(listener: socket.socket, wanted: str) -> list[str]:
    """Every message up to `wanted` (the socket's timeout fails the test if it never comes)."""
    seen: list[str] = []
    while wanted not in seen:
        seen.append(listener.recv(4096).decode())
    return seen


def test_status_tells_the_jobs_queue_and_workers(
    make_daemon: Callable[..., Daemon], make_project: Callable[..., Path], tmp_path: Path
) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        listener.settimeout(30)
        daemon = make_daemon(start=False)
        daemon.env = {"NOTIFY_SOCKET": str(path)}
        daemon.start()
        idle = "STATUS=0 jobs active, 0 batches queued, 0 leased, 0/4 workers busy"
        # The first status comes just before READY=1, so `systemctl start` shows it.
        seen = receive_until(listener, "READY=1")
        assert seen[-2] == idle
        client = daemon.client
        client.deploy(make_project("gated", GATED))
        gate = tmp_path / "gate"
        job = client.submit(
            "gated",
            {
                "workers": 1,
                "config": {"gate": str(gate)},
                "item_list": {"items": list(range(1205)), "batch_size": 1},
            },
        )
        # Its one worker holds its first batch (a first grant is one batch) until the gate.
        held = "STATUS=1 job active, 1,204 batches queued, 1 leased, 1/4 workers busy"
        receive_until(listener, held)
        status = client.get_job("gated", job["job_id"])["job_status"]
        assert (status["batches_in_queue"], status["batch_metrics"]["in_progress"]) == (1204, 1)
        gate.touch()
        receive_until(listener, idle)  # every batch done, its worker gone
        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGTERM)
        receive_until(listener, "STOPPING=1")
        assert listener.recv(4096).decode() == "STATUS=stopping: draining workers"
        # It exits by itself (a second SIGTERM now would race its own exit).
        assert daemon.process.wait(60) == 0
        daemon.process = None
