"""Fixtures that run a real daemon with real workers and real SQLite in a temp dir."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from batchd.client import Client

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "hello"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


@dataclass
class Daemon:
    state_dir: Path
    config_path: Path
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    # How the daemon is started: the service-user tier runs it through setpriv under
    # another interpreter (tests/service_user/conftest.py).
    launcher: list[str] = field(default_factory=list)
    python: str = sys.executable
    cwd: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def client(self) -> Client:
        return Client(self.url, timeout=120)

    def start(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                *self.launcher,
                self.python,
                "-m",
                "batchd",
                "serve",
                "--config",
                str(self.config_path),
                "--listen",
                f"127.0.0.1:{self.port}",
                "--state-dir",
                str(self.state_dir),
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.cwd,
        )
        log.close()
        wait_for(self._healthy, 60, "daemon /healthz")

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"daemon exited {self.process.returncode}:\n{self.output()}")
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.process is None:
            return None
        process, self.process = self.process, None
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def job_log(self, job_id: str) -> str:
        """The messages of the job's log records, one per line."""
        path = self.state_dir / "logs" / f"{job_id}.jsonl"
        if not path.exists():
            return ""
        lines = path.read_text(errors="replace").splitlines()
        return "".join(json.loads(line)["message"] + "\n" for line in lines if line)


def write_config(path: Path, **settings: Any) -> Path:
    lines = []
    for key, value in settings.items():
        lines.append(f"{key} = {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


DEFAULT_TEST_CONFIG: dict[str, Any] = {
    "max_workers": 4,
    "restart_backoff": 0.05,
    "max_restart_backoff": 0.5,
    "worker_stop_grace": 3.0,
    "sqlite_synchronous": "normal",
}


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
        config = {**DEFAULT_TEST_CONFIG, "input_roots": [str(inputs_dir)], **settings}
        daemon = Daemon(
            state_dir=tmp_path / f"state{index}",
            config_path=write_config(tmp_path / f"batchd{index}.toml", **config),
            port=free_port(),
            log_path=tmp_path / f"daemon{index}.log",
        )
        daemons.append(daemon)
        if start:
            daemon.start()
        return daemon

    yield factory
    for daemon in daemons:
        with contextlib.suppress(Exception):
            daemon.stop(timeout=20)


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
