"""What the hostile-input tests share: a handler that echoes, a POST that must fail, RSS, and a
job whose one bad item must fail alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from batchd.client import BatchdError, Client
from tests.conftest import wait_job

ECHO_HANDLER = """
class Handler:
    def __init__(self, config):
        pass

    def handle_batch(self, payload):
        return payload
"""


def refused(client: Client, api: str, job: dict[str, Any], dry_run: bool = False) -> BatchdError:
    """The error a submission gets; fails the test when it is admitted."""
    with pytest.raises(BatchdError) as caught:
        client.submit(api, job, dry_run=dry_run)
    return caught.value


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident set so far (VmHWM), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def one_bad_item_fails_alone(
    client: Client, api: str, batches: int, bad_item: int, max_receive_count: int
) -> tuple[str, dict[str, Any]]:
    """Run `batches` one-item batches in which only `bad_item` fails: the job ends with that
    batch alone dead-lettered after `max_receive_count` attempts, every other batch having
    succeeded and nothing else charged. Returns the job id and the dead letter."""
    job_id = client.submit(
        api,
        {
            "workers": 2,
            "max_receive_count": max_receive_count,
            "item_list": {"items": list(range(batches)), "batch_size": 1},
        },
    )["job_id"]
    final = wait_job(client, api, job_id)
    assert final["status"] == "completed_with_failures", final
    metrics = final["batch_metrics"]
    assert metrics["succeeded"] == batches - 1
    assert metrics["failed"] == 1
    # Every failed attempt was the bad batch's own: nothing else was charged.
    assert metrics["failed_attempts"] == max_receive_count
    (dead,) = client.failed(api, job_id)
    assert dead["payload"] == [bad_item]
    assert dead["attempts"] == max_receive_count
    return job_id, dead
