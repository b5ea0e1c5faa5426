"""A damaged queue database: `batchd serve` exits at once with code 3 and one line saying
which file and what to do, instead of hanging on SQLite's connection thread."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from batchd.constants import DB_FILENAME
from testkit.launcher import free_port
from tests.conftest import EXAMPLE, Daemon

# Far longer than a failed start takes; the old daemon never exited at all.
START_DEADLINE = 60
PAGE = 4096


def serve(state_dir: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "batchd", "serve", "--state-dir", str(state_dir)]
    command += ["--listen", f"127.0.0.1:{free_port()}"]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=START_DEADLINE)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"batchd serve still running after {START_DEADLINE}s") from exc


def random_bytes(state_dir: Path, make_daemon: Callable[..., Daemon]) -> Path:
    state_dir.mkdir()
    (state_dir / DB_FILENAME).write_bytes(os.urandom(25 * PAGE))
    return state_dir


def damaged_pages(state_dir: Path, make_daemon: Callable[..., Daemon]) -> Path:
    """A real database with a job in it, every page after the header overwritten."""
    daemon = make_daemon()
    daemon.client.deploy(EXAMPLE)
    daemon.client.submit("hello", {"item_list": {"items": [1, 2, 3], "batch_size": 1}})
    assert daemon.stop() == 0
    database = daemon.state_dir / DB_FILENAME
    size = database.stat().st_size
    assert size > PAGE
    with database.open("r+b") as data:
        data.seek(PAGE)
        data.write(os.urandom(size - PAGE))
    return daemon.state_dir


@pytest.mark.parametrize("damage", [random_bytes, damaged_pages], ids=lambda f: f.__name__)
def test_corrupt_database_file_fails_the_start_in_one_line(
    tmp_path: Path,
    make_daemon: Callable[..., Daemon],
    damage: Callable[[Path, Callable[..., Daemon]], Path],
) -> None:
    state_dir = damage(tmp_path / "state", make_daemon)
    result = serve(state_dir)
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: the queue database {state_dir / DB_FILENAME} is damaged")
    assert "Troubleshooting" in lines[0]
    # Nothing was touched: the damaged file is still there for the operator to inspect.
    assert (state_dir / DB_FILENAME).exists()
