"""The job status vocabulary, defined once: what is active, what is terminal, and which of
Cortex's statuses batchd never sets (so never offers)."""

from __future__ import annotations

import json
import subprocess
import sys

from batchd import client
from batchd.http import openapi
from batchd.statuses import (
    ACTIVE_STATUSES,
    CORTEX_ONLY_STATUSES,
    REACHABLE_STATUSES,
    SHOWN_ONLY_STATUSES,
    TERMINAL_STATUSES,
    JobStatus,
)


def test_every_status_is_active_shown_only_or_terminal() -> None:
    # `paused` is batchd's extension: shown for an unfinished job, never stored.
    assert {str(s) for s in SHOWN_ONLY_STATUSES} == {"paused"}
    assert set(ACTIVE_STATUSES) | SHOWN_ONLY_STATUSES | TERMINAL_STATUSES == set(JobStatus)
    assert not set(ACTIVE_STATUSES) & TERMINAL_STATUSES
    assert not SHOWN_ONLY_STATUSES & (set(ACTIVE_STATUSES) | TERMINAL_STATUSES)
    assert not JobStatus.PAUSED.terminal and JobStatus.PAUSED in REACHABLE_STATUSES
    assert [str(s) for s in ACTIVE_STATUSES] == ["pending", "enqueuing", "running"]
    assert all(status.terminal for status in TERMINAL_STATUSES)
    assert not any(status.terminal for status in ACTIVE_STATUSES)


def test_cortex_only_statuses_are_never_offered() -> None:
    assert {str(s) for s in CORTEX_ONLY_STATUSES} == {
        "enqueuing",
        "enqueue_failed",
        "unexpected_error",
    }
    assert set(REACHABLE_STATUSES) == set(JobStatus) - CORTEX_ONLY_STATUSES
    document = json.dumps(openapi.document())
    for status in CORTEX_ONLY_STATUSES:
        assert f'"{status}"' not in document
    published = openapi.document()["components"]["schemas"]["JobStatusDocument"]
    assert published["properties"]["status"]["enum"] == [str(s) for s in REACHABLE_STATUSES]


def test_the_client_uses_the_same_sets() -> None:
    assert client.TERMINAL_STATUSES is TERMINAL_STATUSES
    assert client.ACTIVE_STATUSES is ACTIVE_STATUSES
    assert "succeeded" in client.TERMINAL_STATUSES and "running" in client.ACTIVE_STATUSES


def test_the_vocabulary_imports_nothing_of_batchd() -> None:
    code = (
        "import sys, batchd.statuses; "
        "print(sorted(m for m in sys.modules if m.startswith('batchd')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert loaded.strip() == "['batchd', 'batchd.statuses']"
