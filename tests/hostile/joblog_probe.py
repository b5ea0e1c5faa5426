"""What the job-log tests read: the job's stored records and the dropped-lines counter."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import Daemon
from tests.test_metrics import scrape, value

# Enough log lines after the hostile one to fill a pipe (64 KiB) several times over: a
# worker whose output reader died would block on them.
AFTERWARDS = 3000

# Logs AFTERWARDS numbered lines; pasted into each test's handler.
LOG_AFTERWARDS = f"""
from batchd import logger

def log_afterwards():
    for number in range({AFTERWARDS}):
        logger.info("afterwards %d %s", number, "." * 150)
"""


def records(daemon: Daemon, job_id: str) -> list[dict[str, Any]]:
    path = daemon.state_dir / "logs" / f"{job_id}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def afterwards_count(entries: list[dict[str, Any]]) -> int:
    return sum(1 for r in entries if str(r.get("message", "")).startswith("afterwards "))


def dropped(daemon: Daemon, api: str) -> float:
    found = value(scrape(daemon), "batchd_job_log_lines_dropped_total", api=api)
    return found or 0.0
