"""A handler returns a result larger than the daemon's max_result_size.

A result over the channel's frame limit was once taken for the worker being killed: the
attempt was refunded and the worker restarted without end, past max_receive_count. The
worker now measures each result against max_result_size: the batch fails with an error
naming the limit, and each attempt is charged."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import Daemon, wait_job

LIMIT = 4096
MAX_RECEIVE_COUNT = 2

HANDLER = f"""
class Handler:
    def handle_batch(self, payload):
        (item,) = payload
        if item == "big":
            return "x" * {2 * LIMIT}
        # Exactly at the limit is still fine: a JSON string is its text and two quotes.
        return "y" * ({LIMIT} - 2)
"""


def test_result_over_max_result_size_fails_its_batch(
    make_daemon: Callable[..., Daemon], make_project: Callable[..., Path]
) -> None:
    daemon = make_daemon(max_result_size=LIMIT)
    client = daemon.client
    client.deploy(make_project("big-result", HANDLER))
    items = ["a", "b", "big", "c", "d"]
    job_id = client.submit(
        "big-result",
        {
            "workers": 1,
            "max_receive_count": MAX_RECEIVE_COUNT,
            "item_list": {"items": items, "batch_size": 1},
        },
    )["job_id"]
    final = wait_job(client, "big-result", job_id)

    assert final["status"] == "completed_with_failures", final
    metrics = final["batch_metrics"]
    assert metrics["succeeded"] == len(items) - 1
    assert metrics["failed"] == 1
    assert metrics["failed_attempts"] == MAX_RECEIVE_COUNT
    (dead,) = client.failed("big-result", job_id)
    assert dead["payload"] == ["big"]
    assert dead["attempts"] == MAX_RECEIVE_COUNT
    assert dead["error"] == (
        f"UnsendableResult: the result is {2 * LIMIT + 2} bytes of JSON, over the "
        f"daemon's max_result_size of {LIMIT} bytes"
    )
    results = [row["result"] for row in client.results("big-result", job_id)]
    assert results == ["y" * (LIMIT - 2)] * (len(items) - 1)
    # The handler's batches never cost a worker restart.
    assert final["worker_counts"]["failed"] == 0, final["worker_counts"]
