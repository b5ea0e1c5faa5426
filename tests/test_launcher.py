"""The daemon launcher the tests and the bench share (testkit/launcher.py)."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from testkit.launcher import Daemon, LaunchError
from tests.conftest import DEFAULT_TEST_CONFIG, wait_for


def launcher(tmp_path: Path, **settings: object) -> Daemon:
    return Daemon(
        state_dir=tmp_path / "state",
        config_path=tmp_path / "batchd.toml",
        config={**DEFAULT_TEST_CONFIG, **settings},
        log_path=tmp_path / "daemon.log",
    )


def test_a_daemon_that_cannot_start_fails_with_its_log(tmp_path: Path) -> None:
    daemon = launcher(tmp_path, max_wokers=4)
    with pytest.raises(LaunchError, match=r"batchd exited 2:(.|\n)*max_wokers"):
        daemon.start()
    assert daemon.process is None


def test_close_ends_what_the_daemon_left_behind(tmp_path: Path) -> None:
    daemon = launcher(tmp_path)
    # A process the daemon does not know it has: it outlives the daemon's clean exit.
    daemon.prefix = ["sh", "-c", 'sleep 300 & exec "$@"', "sh"]
    try:
        daemon.start()
        assert daemon.client.list_apis() == []
        children = psutil.Process(daemon.pid).children()
        (sleeper,) = [proc for proc in children if proc.name() == "sleep"]
    finally:
        daemon.close()
    assert daemon.process is None
    wait_for(
        lambda: not sleeper.is_running() or sleeper.status() == psutil.STATUS_ZOMBIE,
        what="the left-behind process to be killed",
    )
