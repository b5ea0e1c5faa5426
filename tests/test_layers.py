"""The layering of batchd/ holds (pyproject.toml's import-linter contracts), and a new
upward import breaks the build: the contracts are run on this checkout, then on a copy with
one upward import written into it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    # --no-cache: a cached graph of another tree must never answer for this one.
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def copy_of_checkout(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    root.mkdir()
    shutil.copytree(REPO / "batchd", root / "batchd", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def test_the_layering_holds() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout


@pytest.mark.parametrize(
    ("module", "upward_import", "broken"),
    [
        # The store reaching up into the scheduler (a cycle in the making).
        ("store/records.py", "from batchd.scheduler import core", "nothing imports upward"),
        # A lazy import inside a function counts too.
        ("pool/gpus.py", "def _f() -> None:\n    from batchd.http import app", "upward"),
        # A worker loading the daemon's config (and pydantic with it).
        ("worker/main.py", "from batchd import config", "worker and wire"),
        # The client loading aiohttp.
        ("client.py", "import aiohttp", "none of the daemon's dependencies"),
    ],
)
def test_an_upward_import_breaks_the_build(
    tmp_path: Path, module: str, upward_import: str, broken: str
) -> None:
    root = copy_of_checkout(tmp_path)
    path = root / "batchd" / module
    path.write_text(path.read_text() + "\n\n" + upward_import + "\n")
    result = lint_imports(root)
    assert result.returncode != 0, result.stdout
    assert "1 broken" in result.stdout, result.stdout
    assert broken in result.stdout.split("Broken contracts")[1], result.stdout
