"""A handler logs while the disk holding the job logs is full.

A job-log write that failed once killed the daemon's reader of the worker's output: the
pipe filled and the worker blocked for ever. Now the records that cannot be stored are
dropped and counted, the daemon says so once in its own log, no torn line is left in the
job log, and the job finishes."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Daemon, wait_job
from tests.hostile.joblog_probe import AFTERWARDS, LOG_AFTERWARDS, dropped, records

HANDLER = (
    LOG_AFTERWARDS
    + """
class Handler:
    def handle_batch(self, payload):
        log_afterwards()
        return payload
"""
)

# What is left free on the filled disk: some records fit, then one is cut short.
LEFT_FREE = 4096


def test_job_log_on_a_full_disk_drops_counts_and_finishes(
    make_daemon: Callable[..., Daemon],
    make_project: Callable[..., Path],
    make_tiny_fs: Callable[[int], Path],
) -> None:
    tiny = make_tiny_fs(1)
    daemon = make_daemon(start=False)
    daemon.state_dir.mkdir()
    # Only the job logs live on the small disk: the queue itself keeps working.
    (daemon.state_dir / "logs").symlink_to(tiny, target_is_directory=True)
    daemon.start()
    client = daemon.client
    client.deploy(make_project("full-disk-log", HANDLER))
    stats = os.statvfs(tiny)
    (tiny / "filler").write_bytes(b"\0" * (stats.f_bavail * stats.f_frsize - LEFT_FREE))

    job_id = client.submit(
        "full-disk-log", {"workers": 1, "item_list": {"items": [1, 2], "batch_size": 1}}
    )["job_id"]
    final = wait_job(client, "full-disk-log", job_id)

    assert final["status"] == "succeeded", final
    assert final["batch_metrics"]["succeeded"] == 2
    kept = records(daemon, job_id)  # every stored line is a whole record
    assert 0 < len(kept) < 2 * AFTERWARDS
    assert dropped(daemon, "full-disk-log") == 2 * AFTERWARDS - len(kept)
    assert daemon.output().count("job log record dropped") == 1
