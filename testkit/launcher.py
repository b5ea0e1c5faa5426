"""One way to run ``python -m batchd serve`` as a child process, for tests and the bench.

A :class:`Daemon` is told its state dir, config (a file, written from settings when given),
where to listen (a TCP port on loopback or a Unix socket), which interpreter to run, what
to add to the environment and, for another user, a command prefix (setpriv) that execs the
daemon. It starts the daemon with its output in a log file and waits for ``/healthz``; it
stops it (SIGTERM, then SIGKILL after a timeout), kills it with -9, restarts it; and
:meth:`Daemon.close` ends it with every process it was seen to start, whatever state a
failed test or run left it in. Nothing here changes how the daemon itself runs.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

from batchd.client import Client, unix_socket_url

READY_TIMEOUT = 60.0
READY_POLL = 0.02


class LaunchError(RuntimeError):
    """The daemon exited, or did not answer /healthz in time, while starting."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(path: Path, **settings: Any) -> Path:
    """A batchd config file of `settings` (TOML, each value as JSON writes it)."""
    path.write_text("".join(f"{key} = {_toml_value(value)}\n" for key, value in settings.items()))
    return path


def _toml_value(value: Any) -> str:
    """JSON spells TOML's strings, numbers, booleans and arrays; a table goes inline."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


class Daemon:
    """``batchd serve`` on `state_dir`. Settable until :meth:`start`: `state_dir`, `env`,
    `extra_args`, `projects` (a test may move the state onto a small filesystem first)."""

    def __init__(
        self,
        *,
        state_dir: Path,
        config_path: Path,
        log_path: Path,
        config: Mapping[str, Any] | None = None,
        port: int | None = None,
        socket_path: Path | None = None,
        python: str = sys.executable,
        prefix: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        cwd: Path | None = None,
        preexec_fn: Callable[[], None] | None = None,
        projects: Sequence[Path] = (),
        client_timeout: float = 120,
    ) -> None:
        self.state_dir = state_dir
        self.config_path = config_path if config is None else write_config(config_path, **config)
        self.log_path = log_path
        self.socket_path = socket_path
        self.port = free_port() if port is None and socket_path is None else port
        self.python = python
        self.prefix = list(prefix)
        self.env = dict(env or {})
        self.extra_args = list(extra_args)
        self.cwd = cwd
        # Runs in the child before the exec (resource limits, say).
        self.preexec_fn = preexec_fn
        self.projects = list(projects)
        self.client_timeout = client_timeout
        self.process: subprocess.Popen[bytes] | None = None
        # Every process seen under the daemon, so close() can end those it left behind.
        self._seen: dict[int, psutil.Process] = {}

    @property
    def listen(self) -> str:
        return f"unix:{self.socket_path}" if self.socket_path else f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        if self.socket_path:
            return unix_socket_url(str(self.socket_path))
        return f"http://127.0.0.1:{self.port}"

    @property
    def client(self) -> Client:
        return Client(self.url, timeout=self.client_timeout)

    @property
    def pid(self) -> int:
        assert self.process is not None, "the daemon is not running"
        return self.process.pid

    def command(self) -> list[str]:
        return [
            *self.prefix,
            self.python,
            "-m",
            "batchd",
            "serve",
            "--config",
            str(self.config_path),
            "--listen",
            self.listen,
            "--state-dir",
            str(self.state_dir),
            *self.extra_args,
        ]

    def start(self, timeout: float = READY_TIMEOUT) -> None:
        """Start it and wait until it answers /healthz; on the first start, deploy
        `projects`. A daemon that fails to come up is ended before the error is raised."""
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.cwd,
                preexec_fn=self.preexec_fn,
            )
        try:
            self.wait_ready(timeout)
            for project in self.projects:
                self.client.deploy(project)
        except BaseException:
            self.close()
            raise
        self.projects = []

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not self.healthy():
            assert self.process is not None
            if self.process.poll() is not None:
                raise LaunchError(f"batchd exited {self.process.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise LaunchError(f"batchd did not answer /healthz in {timeout:g}s: {self.tail()}")
            time.sleep(READY_POLL)

    def healthy(self) -> bool:
        if self.socket_path:
            conn: http.client.HTTPConnection = _UnixHTTPConnection(str(self.socket_path), 2)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            conn.request("GET", "/healthz")
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        """Signal the daemon and wait for it (SIGKILL after `timeout`); its exit code.
        What it started is left to it: the tests watch what a daemon's death does."""
        if self.process is None:
            return None
        if sig == signal.SIGKILL:
            # Its processes outlive it, reparented: note them while they are still its own.
            self.descendants()
        process = self.process
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.descendants()
                process.kill()
                process.wait()
        self.process = None
        return process.returncode

    def kill(self) -> None:
        """kill -9, as a crash would."""
        self.stop(signal.SIGKILL)

    def restart(self, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        self.start()

    def descendants(self) -> list[psutil.Process]:
        """Its live processes (workers and whatever they started), remembered for close()."""
        if self.process is None:
            return []
        found = []
        pending = children(self.process.pid)
        while pending:
            pid = pending.pop()
            proc = self._seen.get(pid)
            try:
                if proc is None or not proc.is_running():
                    proc = self._seen[pid] = psutil.Process(pid)
            except psutil.Error:
                continue
            found.append(proc)
            pending |= children(pid)
        return found

    def close(self, timeout: float = 20) -> None:
        """Stop it, then kill whatever it started that is still running."""
        self.descendants()
        self.stop(timeout=timeout)
        for proc in self._seen.values():
            with contextlib.suppress(psutil.Error):
                if proc.is_running():
                    proc.kill()
        self._seen.clear()

    def __enter__(self) -> Daemon:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def output(self) -> str:
        """Everything it logged, every start included."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def job_log(self, job_id: str) -> str:
        """The messages of the job's log records, one per line."""
        path = self.state_dir / "logs" / f"{job_id}.jsonl"
        if not path.exists():
            return ""
        lines = path.read_text(errors="replace").splitlines()
        return "".join(json.loads(line)["message"] + "\n" for line in lines if line)


def children(pid: int) -> set[int]:
    """Direct children of `pid`, from /proc (every thread's list): cheap enough to read
    just before a kill -9, unlike a walk of the whole process table."""
    found: set[int] = set()
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                found.update(int(p) for p in (task / "children").read_text().split())
    return found


def close_all(daemons: Iterable[Daemon], timeout: float = 20) -> None:
    """Close every daemon, the rest still when one of them fails to close."""
    for daemon in daemons:
        with contextlib.suppress(Exception):
            daemon.close(timeout)
