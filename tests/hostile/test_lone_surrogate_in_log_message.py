"""A handler logs, prints and writes raw records holding lone surrogates (text decoded
with surrogateescape).

A raw record with a surrogate escape once killed the daemon's reader of the log pipe
(the job log could not encode it): the pipe filled and the worker blocked for ever. A
print of such text failed the batch. Now each surrogate is spelled out as its escape,
the line is kept, and the reader goes on draining."""

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

HANDLER = (
    LOG_AFTERWARDS
    + """
import os

class Handler:
    def handle_batch(self, payload):
        name = b"caf\\xff".decode("utf-8", "surrogateescape")
        logger.info("logged %s", name, extra={"file": name})
        print(f"printed {name}")
        fd = int(os.environ["BATCHD_LOG_FD"])
        os.write(fd, b'{"message": "raw \\\\ud800", "\\\\udcff key": 1}\\n')
        log_afterwards()
        return payload
"""
)


def test_lone_surrogate_in_log_message_is_escaped_and_kept(
    daemon: Daemon, make_project: Callable[..., Path]
) -> None:
    client = daemon.client
    client.deploy(make_project("surrogate-log", HANDLER))
    job_id = client.submit(
        "surrogate-log", {"workers": 1, "item_list": {"items": [1, 2], "batch_size": 1}}
    )["job_id"]
    final = wait_job(client, "surrogate-log", job_id)

    assert final["status"] == "succeeded", final
    assert final["batch_metrics"]["failed_attempts"] == 0
    entries = records(daemon, job_id)
    assert afterwards_count(entries) == 2 * AFTERWARDS
    logged = [r for r in entries if r["message"] == "logged caf\\udcff"]
    assert len(logged) == 2 and all(r["file"] == "caf\\udcff" for r in logged), logged
    assert [r["message"] for r in entries].count("printed caf\\udcff") == 2
    raw = [r for r in entries if r["message"] == "raw \\ud800"]
    assert len(raw) == 2 and all(r["\\udcff key"] == 1 for r in raw), raw
    assert dropped(daemon, "surrogate-log") == 0
