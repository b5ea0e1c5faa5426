"""`make wheelhouse` holds everything an air-gapped box needs to install batchd."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
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
    # The docs go to <venv>/share/doc/batchd/, where the systemd unit's Documentation= points.
    docs = {
        name.split("/data/share/doc/batchd/")[1]
        for name in members
        if "/data/share/doc/batchd/" in name
    }
    assert {"README.md", "systemd.md", "configuration.md", "install.md"} <= docs, docs
    # So are the SQL files of both stores, and the postgres extra's driver is in the house.
    assert {
        "batchd/store/sqlite/migrations/0001_initial.sql",
        "batchd/store/postgres/migrations/0001_initial.sql",
        "batchd/store/postgres/sql/leases.sql",
    } <= members
    assert any(name.startswith("asyncpg-") for name in wheels), wheels
    # boto3 too: the s3 extra, and the venv of every API deployed from a cortex.yaml.
    assert any(name.startswith("boto3-") for name in wheels), wheels
    # Reproducible: every wheel is the version constraints.txt pins, whatever the day.
    pins = pinned_versions()
    for name in wheels:
        project, version = name.split("-")[:2]
        if project != "batchd":
            assert pins.get(canonical(project)) == version, (name, pins.get(canonical(project)))
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
    assert (venv / "share" / "doc" / "batchd" / "systemd.md").is_file()


def canonical(project: str) -> str:
    return re.sub(r"[-_.]+", "-", project).lower()


def pinned_versions() -> dict[str, str]:
    lines = (REPO / "constraints.txt").read_text().splitlines()
    pins = [line.split("==") for line in lines if line and not line.startswith("#")]
    return {canonical(project): version for project, version in pins}


def test_constraints_pin_every_dependency_exactly() -> None:
    pins = pinned_versions()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        wanted += extra
    for requirement in wanted:
        name = canonical(re.split(r"[\[<>=!~;\s]", requirement, maxsplit=1)[0])
        assert name in pins, f"{requirement} is not pinned in constraints.txt (make lock)"
    assert all(re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", version) for version in pins.values())


@pytest.mark.timeout(300)
def test_building_batchd_prints_no_setuptools_warning(tmp_path: Path) -> None:
    # The license table once warned (30 lines) on every install; a new deprecation should be
    # seen here rather than by users.
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--verbose"]
    build = subprocess.run(
        [*pip_wheel, "--wheel-dir", str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    output = build.stdout + build.stderr
    assert "Successfully built batchd" in output or list(tmp_path.glob("batchd-*.whl"))
    for warning in ("Deprecat", "SetuptoolsWarning", "project.license"):
        assert warning not in output, output[output.find(warning) - 500 :][:1500]
