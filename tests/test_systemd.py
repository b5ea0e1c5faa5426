"""The shipped systemd unit is valid (where systemd-analyze exists)."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import tomllib
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


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not found")
def test_unit_exposure_is_at_most_2_5(tmp_path: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for batchd.service: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.5


def test_unit_loosens_only_what_gpus_need() -> None:
    text = UNIT.read_text()
    for setting in (
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "DevicePolicy=closed",
        "CapabilityBoundingSet=\n",
        "SystemCallFilter=@system-service",
        "DeviceAllow=/dev/nvidiactl rw",
        "LoadCredential=token:",
        "StateDirectoryMode=0700\n",
        "Delegate=yes\n",
    ):
        assert setting in text, setting
    # The two that would break GPUs must be absent, each with its reason given.
    assert "\nPrivateDevices=" not in text and "# Not PrivateDevices=" in text
    assert "\nMemoryDenyWriteExecute=" not in text and "# Not MemoryDenyWriteExecute=" in text
    # Delegate=yes hands the daemon its cgroup subtree, which this would make read-only.
    assert "\nProtectControlGroups=" not in text and "# Not ProtectControlGroups=" in text


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


def test_documentation_points_at_docs_that_pip_installs() -> None:
    # ExecStart's venv is where pip puts the data files: <venv>/share/doc/batchd/.
    venv = "/opt/batchd/venv"
    assert f"ExecStart={venv}/bin/batchd " in UNIT.read_text()
    uris = [
        line.removeprefix("Documentation=")
        for line in UNIT.read_text().splitlines()
        if line.startswith("Documentation=")
    ]
    assert uris
    shipped = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = shipped["data-files"]["share/doc/batchd"]
    for uri in uris:
        prefix = f"file://{venv}/share/doc/batchd/"
        assert uri.startswith(prefix), uri
        name = uri.removeprefix(prefix)
        assert any(fnmatch.fnmatch(f"docs/{name}", p) or name == p for p in patterns), uri
        assert (REPO / "docs" / name).is_file(), uri
