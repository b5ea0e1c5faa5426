"""A handler writes a report whose ``metrics`` its metrics_client could not have sent.

A negative count once reached prometheus_client, which raised ValueError in the driver:
taken for the daemon's own failure, the worker was killed unblamed and the same batch ran
again without end. A tag value with a lone surrogate (JSON's "\\ud800") was kept, and every
later /metrics scrape failed to encode it. Both are now a broken channel, charged to the
batch like any other frame the worker could not have sent, and /metrics still answers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Daemon, wait_job
from tests.test_metrics import scrape

MAX_RECEIVE_COUNT = 2

HANDLER = """
import os, time

from batchd.wire import framing

BODY = {body!r}

class Handler:
    def handle_batch(self, payload):
        (item,) = payload
        if item == "bad":
            os.write(int(os.environ["BATCHD_WORKER_FD"]), framing.frame(BODY))
            # Stay in this batch: the daemon kills the worker.
            time.sleep(3600)
        return item
"""

REPORT = b'{"op":"progress","token":1,"done":[],"failed":[],"metrics":%s}'


@pytest.mark.parametrize(
    ("metrics", "error"),
    [
        (b'{"dropped":-1}', "metrics without a list of series and counts (ints, 0 or more)"),
        (b'{"series":[["c","x",[["k","\\ud800"]],1]]}', "a metric with tags [['k', '\\ud800']]"),
    ],
)
def test_malformed_metrics_from_a_handler_are_charged_to_its_batch(
    daemon: Daemon, make_project: Callable[..., Path], metrics: bytes, error: str
) -> None:
    client = daemon.client
    client.deploy(make_project("bad-metrics", HANDLER.format(body=REPORT % metrics)))
    items = ["a", "bad", "c"]
    job_id = client.submit(
        "bad-metrics",
        {
            "workers": 1,
            "max_receive_count": MAX_RECEIVE_COUNT,
            "batch_timeout": 600,
            "item_list": {"items": items, "batch_size": 1},
        },
    )["job_id"]
    final = wait_job(client, "bad-metrics", job_id)

    assert final["status"] == "completed_with_failures", final
    assert final["batch_metrics"]["succeeded"] == len(items) - 1
    (dead,) = client.failed("bad-metrics", job_id)
    assert dead["payload"] == ["bad"]
    assert dead["attempts"] == MAX_RECEIVE_COUNT
    assert dead["error"] == f"the worker sent {error}"
    assert not [s for s in scrape(daemon) if s.name.startswith("batchd_handler_x")]
