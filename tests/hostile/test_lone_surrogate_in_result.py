"""A handler returns text holding a lone surrogate (bytes decoded with surrogateescape).

It once crashed the worker while it encoded its report: every batch finished but not yet
reported was charged an attempt, and a long job ended dead-lettered. Only the batch whose
result cannot be sent may fail, with an error that says why."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import Daemon
from tests.hostile.helpers import one_bad_item_fails_alone

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
    job_id, dead = one_bad_item_fails_alone(
        client, "surrogate-result", BATCHES, BAD_ITEM, MAX_RECEIVE_COUNT
    )
    assert "lone surrogate" in dead["error"] and "'\\udcff'" in dead["error"], dead["error"]
    results = sorted(row["result"]["item"] for row in client.results("surrogate-result", job_id))
    assert results == [item for item in range(BATCHES) if item != BAD_ITEM]
