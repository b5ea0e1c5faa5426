"""Fixtures that run a real daemon with real workers and real SQLite in a temp dir."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from batchd.client import Client
from testkit.launcher import Daemon, close_all
from tests import pg, s3server

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "hello"


def wait_for(condition: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    """Poll until `condition()` is truthy; fail the test after a generous deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


DEFAULT_TEST_CONFIG: dict[str, Any] = {
    "max_workers": 4,
    "restart_backoff": 0.05,
    "max_restart_backoff": 0.5,
    "worker_stop_grace": 3.0,
    "sqlite_synchronous": "normal",
}


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[pg.Cluster]:
    """One throwaway PostgreSQL cluster for the session (see tests/pg.py)."""
    with pg.cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[s3server.S3Server]:
    """One real S3 server (moto's server mode) for the session (see tests/s3server.py)."""
    with s3server.s3_server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture
def inputs_dir(tmp_path: Path) -> Path:
    path = tmp_path / "inputs"
    path.mkdir()
    return path


@pytest.fixture
def make_daemon(tmp_path: Path, inputs_dir: Path) -> Iterator[Callable[..., Daemon]]:
    daemons: list[Daemon] = []

    def factory(start: bool = True, **settings: Any) -> Daemon:
        index = len(daemons)
        daemon = Daemon(
            state_dir=tmp_path / f"state{index}",
            config_path=tmp_path / f"batchd{index}.toml",
            config={**DEFAULT_TEST_CONFIG, "input_roots": [str(inputs_dir)], **settings},
            log_path=tmp_path / f"daemon{index}.log",
        )
        daemons.append(daemon)
        if start:
            daemon.start()
        return daemon

    yield factory
    close_all(daemons)


@pytest.fixture
def daemon(make_daemon: Callable[..., Daemon]) -> Daemon:
    return make_daemon()


@pytest.fixture
def make_project(tmp_path: Path) -> Callable[..., Path]:
    """Write a Handler project: make_project("name", handler_source, config={...}, files={...})."""

    def factory(
        name: str,
        handler: str,
        config: dict[str, Any] | None = None,
        files: dict[str, str] | None = None,
        extra_toml: str = "",
    ) -> Path:
        root = tmp_path / "projects" / name
        if root.exists():
            import shutil

            shutil.rmtree(root)
        root.mkdir(parents=True)
        (root / "handler.py").write_text(textwrap.dedent(handler))
        toml = [f'name = "{name}"', "[handler]", 'path = "handler.py"']
        if config:
            toml.append(f"config = {_toml_inline(config)}")
        (root / "batchd.toml").write_text("\n".join(toml) + "\n" + extra_toml)
        for relpath, content in (files or {}).items():
            target = root / relpath
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        return root

    return factory


def _toml_inline(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_inline(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_inline(v) for v in value) + "]"
    return json.dumps(value)


def wait_job(client: Client, api: str, job_id: str, timeout: float = 90) -> dict[str, Any]:
    return client.wait(api, job_id, poll_interval=0.05, timeout=timeout)


@pytest.fixture
def make_tiny_fs(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """A tmpfs of the given size in MiB, for filling the disk under a daemon; skips the
    test where this machine does not let it mount one."""
    mounts: list[Path] = []

    def mount(size_mib: int) -> Path:
        path = tmp_path / f"tiny{len(mounts)}"
        path.mkdir()
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(path)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.strip()}")
        mounts.append(path)
        return path

    yield mount
    for path in mounts:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def memory_cgroup() -> Iterator[Path]:
    """A cgroup v1 memory group with a 64 MiB limit, for a real kernel OOM kill; skips the
    test where this machine has no writable cgroup v1 memory controller."""
    try:
        own = next(
            line.split(":", 2)[2]
            for line in Path("/proc/self/cgroup").read_text().splitlines()
            if line.split(":")[1] == "memory"
        )
        path = (
            Path("/sys/fs/cgroup/memory") / own.lstrip("/") / f"batchd-oom-{secrets.token_hex(4)}"
        )
        path.mkdir()
    except (StopIteration, OSError, IndexError) as exc:
        pytest.skip(f"no writable cgroup v1 memory controller here: {exc}")
    try:
        (path / "memory.limit_in_bytes").write_text(str(64 * 1024 * 1024))
        memsw = path / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            memsw.write_text(str(64 * 1024 * 1024))
        yield path
    finally:
        for pid in (path / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        wait_for(lambda: not (path / "cgroup.procs").read_text().split(), what="cgroup empty")
        path.rmdir()
