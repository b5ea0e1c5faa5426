"""A handler raises an exception whose message holds a lone surrogate.

The worker once crashed encoding the failure report, charging every batch reported with
it. The message is escaped instead: the batch fails once per attempt with a readable
error, and nothing else is charged."""

from __future__ import annotations

import json
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
            name = b"caf\\xff".decode("utf-8", "surrogateescape")
            raise FileNotFoundError(f"no such file: {{name}}")
        return {{"item": item}}
"""


def test_lone_surrogate_in_exception_message_is_escaped(
    daemon: Daemon, make_project: Callable[..., Path]
) -> None:
    client = daemon.client
    client.deploy(make_project("surrogate-error", HANDLER))
    job_id, dead = one_bad_item_fails_alone(
        client, "surrogate-error", BATCHES, BAD_ITEM, MAX_RECEIVE_COUNT
    )
    # The surrogate is spelled out, so the error says what the handler said.
    assert dead["error"] == "FileNotFoundError: no such file: caf\\udcff"
    assert "caf\\udcff" in dead["traceback"]
    # The worker's own log records of the failure got through too.
    log_path = daemon.state_dir / "logs" / f"{job_id}.jsonl"
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    failures = [r for r in records if r["message"] == "handle_batch failed"]
    assert len(failures) == MAX_RECEIVE_COUNT
    assert all("no such file: caf\\udcff" in r["exc_info"] for r in failures), failures
