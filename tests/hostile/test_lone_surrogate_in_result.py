"""A handler returns text holding a lone surrogate (bytes decoded with surrogateescape).

It once crashed the worker while it encoded its report: every batch finished but not yet
reported was charged an attempt, and a long job ended dead-lettered. Only the batch whose
result cannot be sent may fail, with an error that says why."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import Daemon, wait_job

BATCHES = 300
BAD_ITEM = 150
MAX_RECEIVE_COUNT = 2

HANDLER = f"""
class Handler:
    def handle_batch(self, payload):
        (item,) = payload
        if item == {BAD_ITEM}:
            return {{"name": b"caf\\xff".decode("utf-8", "surrogateescape")}}
        return {{"item": item}}
"""


def test_lone_surrogate_in_result_fails_only_its_batch(
    daemon: Daemon, make_project: Callable[..., Path]
) -> None:
    client = daemon.client
    client.deploy(make_project("surrogate-result", HANDLER))
    job_id = client.submit(
        "surrogate-result",
        {
            "workers": 2,
            "max_receive_count": MAX_RECEIVE_COUNT,
            "item_list": {"items": list(range(BATCHES)), "batch_size": 1},
        },
    )["job_id"]
    final = wait_job(client, "surrogate-result", job_id)

    assert final["status"] == "completed_with_failures", final
    metrics = final["batch_metrics"]
    assert metrics["succeeded"] == BATCHES - 1
    assert metrics["failed"] == 1
    # Every failed attempt was the bad batch's own: nothing else was charged.
    assert metrics["failed_attempts"] == MAX_RECEIVE_COUNT
    (dead,) = client.failed("surrogate-result", job_id)
    assert dead["payload"] == [BAD_ITEM]
    assert dead["attempts"] == MAX_RECEIVE_COUNT
    assert "lone surrogate" in dead["error"] and "'\\udcff'" in dead["error"], dead["error"]
    results = sorted(row["result"]["item"] for row in client.results("surrogate-result", job_id))
    assert results == [item for item in range(BATCHES) if item != BAD_ITEM]
