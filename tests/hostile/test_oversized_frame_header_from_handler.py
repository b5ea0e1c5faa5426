"""A handler writes a frame header claiming 4 GiB onto the worker's channel.

The daemon cannot read such a frame. It once took that for its own failure: the worker
was killed, its batch refunded, and a new worker ran the same batch again without end.
A channel broken by the worker's own message is now charged to the batch it was in, so
the batch is dead-lettered after max_receive_count attempts and the job ends."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import Daemon, wait_job

MAX_RECEIVE_COUNT = 2

HANDLER = """
import os, time

class Handler:
    def handle_batch(self, payload):
        (item,) = payload
        if item == "bad":
            os.write(int(os.environ["BATCHD_WORKER_FD"]), b"\\xff\\xff\\xff\\xff")
            # Stay in this batch: the daemon kills the worker.
            time.sleep(3600)
        return item
"""


def test_oversized_frame_header_from_handler_is_charged_to_its_batch(
    daemon: Daemon, make_project: Callable[..., Path]
) -> None:
    client = daemon.client
    client.deploy(make_project("bad-frame", HANDLER))
    items = ["a", "b", "bad", "c", "d"]
    job_id = client.submit(
        "bad-frame",
        {
            "workers": 1,
            "max_receive_count": MAX_RECEIVE_COUNT,
            # One batch per grant: the bad batch is the only one its worker holds.
            "batch_timeout": 600,
            "item_list": {"items": items, "batch_size": 1},
        },
    )["job_id"]
    final = wait_job(client, "bad-frame", job_id)

    assert final["status"] == "completed_with_failures", final
    metrics = final["batch_metrics"]
    assert metrics["succeeded"] == len(items) - 1
    assert metrics["failed"] == 1
    assert metrics["failed_attempts"] == MAX_RECEIVE_COUNT
    (dead,) = client.failed("bad-frame", job_id)
    assert dead["payload"] == ["bad"]
    assert dead["attempts"] == MAX_RECEIVE_COUNT
    assert dead["error"] == (
        "the worker sent a frame of 4294967295 bytes, over the 536870912-byte frame limit"
    )
