"""What the hostile-input tests share: a handler that echoes, a POST that must fail, RSS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from batchd.client import BatchdError, Client

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
