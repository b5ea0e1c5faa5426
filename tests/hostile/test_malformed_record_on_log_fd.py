"""A handler writes a malformed record on the structured-log pipe: JSON nested far deeper
than any parser follows, then lines that are not JSON objects at all.

The daemon's reader of that pipe once died on it; the pipe then filled and the worker
blocked for ever. The reader keeps such lines as text and goes on draining."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import Daemon, wait_job
from tests.hostile.joblog_probe import (
    AFTERWARDS,
    LOG_AFTERWARDS,
    afterwards_count,
    dropped,
    records,
)

DEPTH = 100_000

HANDLER = (
    LOG_AFTERWARDS
    + f"""
import os

class Handler:
    def handle_batch(self, payload):
        fd = int(os.environ["BATCHD_LOG_FD"])
        os.write(fd, b"[" * {DEPTH} + b"]" * {DEPTH} + b"\\n")
        os.write(fd, b"[1, 2]\\n" + b"not json at all\\n" + b"\\xff\\xfe broken utf-8\\n")
        log_afterwards()
        return payload
"""
)


def test_malformed_record_on_log_fd_is_kept_as_text_and_draining_goes_on(
    daemon: Daemon, make_project: Callable[..., Path]
) -> None:
    client = daemon.client
    client.deploy(make_project("malformed-log", HANDLER))
    job_id = client.submit(
        "malformed-log", {"workers": 1, "item_list": {"items": [1, 2], "batch_size": 1}}
    )["job_id"]
    final = wait_job(client, "malformed-log", job_id)

    assert final["status"] == "succeeded", final
    assert final["batch_metrics"]["failed_attempts"] == 0
    entries = records(daemon, job_id)
    assert afterwards_count(entries) == 2 * AFTERWARDS
    messages = [str(r["message"]) for r in entries]
    assert messages.count("[" * DEPTH + "]" * DEPTH) == 2
    assert messages.count("[1, 2]") == 2
    assert messages.count("not json at all") == 2
    assert messages.count("\ufffd\ufffd broken utf-8") == 2
    # Every line was kept: nothing had to be dropped.
    assert dropped(daemon, "malformed-log") == 0
