"""`make wheelhouse` holds everything an air-gapped box needs to install batchd."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.mark.timeout(600)
def test_offline_install_from_the_wheelhouse_alone(tmp_path: Path) -> None:
    wheelhouse = tmp_path / "wheelhouse"
    subprocess.run(
        ["make", "-C", str(REPO), "wheelhouse", f"WHEELHOUSE={wheelhouse}"],
        check=True,
        capture_output=True,
        timeout=540,
    )
    wheels = sorted(path.name for path in wheelhouse.glob("*.whl"))
    assert any(name.startswith("batchd-") for name in wheels), wheels
    assert all(name.endswith(".whl") for name in wheels)
    # The dashboard's static files are package data: without them / and /ui/ are 404s.
    (batchd_wheel,) = wheelhouse.glob("batchd-*.whl")
    members = set(zipfile.ZipFile(batchd_wheel).namelist())
    assert {"batchd/ui/index.html", "batchd/ui/app.js", "batchd/ui/style.css"} <= members
    # So are the SQL files of both stores, and the postgres extra's driver is in the house.
    assert {
        "batchd/store/sqlite/migrations/0001_initial.sql",
        "batchd/store/postgres/migrations/0001_initial.sql",
        "batchd/store/postgres/sql/leases.sql",
    } <= members
    assert any(name.startswith("asyncpg-") for name in wheels), wheels
    # boto3 too: the s3 extra, and the venv of every API deployed from a cortex.yaml.
    assert any(name.startswith("boto3-") for name in wheels), wheels
    venv = tmp_path / "offline-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # --no-index: nothing may come from a package index, only from the wheelhouse.
    install = subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "--no-index",
            "--find-links",
            str(wheelhouse),
            "batchd[postgres,s3]",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    check = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import aiohttp, aiosqlite, pydantic, pathspec, pythonjsonlogger, batchd.daemon.run; "
            "import batchd.store.postgres.store, boto3; "
            "print('ok')",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.stdout.strip() == "ok", check.stderr
    help_text = subprocess.run(
        [str(venv / "bin" / "batchd"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert help_text.returncode == 0 and "serve" in help_text.stdout
