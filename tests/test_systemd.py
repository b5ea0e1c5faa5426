"""The shipped systemd unit is valid (where systemd-analyze exists)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

UNIT = REPO / "systemd" / "batchd.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not found")
def test_unit_verifies(tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at this checkout's batchd.
    batchd = Path(sys.executable).parent / "batchd"
    unit = tmp_path / "batchd.service"
    unit.write_text(UNIT.read_text().replace("/opt/batchd/venv/bin/batchd", str(batchd)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "batchd.service" not in result.stderr, result.stderr


def test_unit_uses_notify_and_watchdog() -> None:
    settings = dict(
        line.split("=", 1)
        for line in UNIT.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert settings["Type"] == "notify"
    assert settings["KillMode"] == "mixed"
    assert settings["OOMPolicy"] == "continue"
    assert settings["Restart"] == "on-failure"
    assert int(settings["WatchdogSec"]) > 0
    assert int(settings["TimeoutStopSec"]) > 10  # the default worker_stop_grace
    assert "--config /etc/batchd/batchd.toml" in settings["ExecStart"]
