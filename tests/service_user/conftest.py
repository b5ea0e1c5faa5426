"""The acceptance tier: the daemon as an unprivileged system user, as the shipped unit runs it.

Root creates the user, as a package install would. The user cannot reach a Python that
lives under /root, so a venv it can run is built once from an interpreter it can reach,
with batchd's runtime dependencies, and cached outside the clone; each session copies the
batchd source beside it. Each daemon starts through setpriv, which changes uid, gid and
groups and then execs, as systemd's User= does, so the test's pid is the daemon's.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testkit.launcher import close_all, write_config
from tests.conftest import DEFAULT_TEST_CONFIG, REPO, Daemon

SERVICE_USER = "batchd-test"
CACHE = Path(os.environ.get("BATCHD_TEST_CACHE", "/var/cache/batchd-tests"))
# Interpreters the service user might reach; the first that runs as that user wins.
PYTHON_CANDIDATES = ("/usr/bin/python3", getattr(sys, "_base_executable", sys.executable))
VENV_BUILD_TIMEOUT = 600


@dataclass(frozen=True)
class ServiceUser:
    name: str
    uid: int
    gid: int
    python: Path  # the venv interpreter the daemon runs under
    base_python: str  # what that venv was made from, for per-API venvs
    pythonpath: Path  # this session's copy of the batchd source

    def setpriv(self) -> list[str]:
        return [
            "setpriv",
            f"--reuid={self.uid}",
            f"--regid={self.gid}",
            "--init-groups",
            "--inh-caps=-all",
            "--",
        ]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.setpriv(), *args], capture_output=True, text=True, timeout=120, check=False
        )


def _ensure_user() -> pwd.struct_passwd:
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(SERVICE_USER)
    subprocess.run(
        [
            "useradd",
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            SERVICE_USER,
        ],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam(SERVICE_USER)


def _reachable_python(user: pwd.struct_passwd) -> str | None:
    # The daemon execs its interpreter again for every worker: that must work too.
    probe = (
        "import subprocess, sys; assert sys.version_info >= (3, 11); "
        "subprocess.run([sys.executable, '-c', 'import json'], check=True)"
    )
    for candidate in PYTHON_CANDIDATES:
        if not candidate or not os.path.exists(candidate):
            continue
        args = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
        result = subprocess.run(
            [*args, "--", candidate, "-c", probe], capture_output=True, check=False
        )
        if result.returncode == 0:
            return candidate
    return None


def _runtime_requirements() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    return list(project["project"]["dependencies"])


def _service_venv(base_python: str) -> Path:
    """A venv with batchd's runtime dependencies (not batchd), built once per requirement set."""
    requirements = _runtime_requirements()
    key = hashlib.sha256(
        "\n".join([os.path.realpath(base_python), *requirements]).encode()
    ).hexdigest()[:16]
    CACHE.mkdir(parents=True, exist_ok=True)
    CACHE.chmod(0o755)
    venv = CACHE / f"service-venv-{key}"
    with (CACHE / "service-venv.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (venv / ".complete").exists():
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([base_python, "-m", "venv", str(venv)], check=True, capture_output=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        result = subprocess.run(
            [*pip, *requirements],
            capture_output=True,
            text=True,
            timeout=VENV_BUILD_TIMEOUT,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(f"could not build the service user's venv:\n{result.stderr[-3000:]}")
        (venv / ".complete").touch()
    return venv


@pytest.fixture(scope="session")
def service_user() -> Iterator[ServiceUser]:
    if os.geteuid() != 0:
        pytest.skip("the service-user tier needs root to create the user and drop to it")
    for tool in ("setpriv", "useradd"):
        if shutil.which(tool) is None:
            pytest.skip(f"the service-user tier needs {tool}")
    user = _ensure_user()
    base_python = _reachable_python(user)
    if base_python is None:
        pytest.skip(f"no Python >= 3.11 that {SERVICE_USER} can run: {PYTHON_CANDIDATES}")
    venv = _service_venv(base_python)
    session = Path(tempfile.mkdtemp(prefix="batchd-service-src-"))
    session.chmod(0o755)
    shutil.copytree(
        REPO / "batchd", session / "batchd", ignore=shutil.ignore_patterns("__pycache__")
    )
    yield ServiceUser(
        name=user.pw_name,
        uid=user.pw_uid,
        gid=user.pw_gid,
        python=venv / "bin" / "python",
        base_python=base_python,
        pythonpath=session,
    )
    shutil.rmtree(session, ignore_errors=True)


@dataclass
class ServiceBox:
    """One test's world: a folder the service user owns, with its daemons."""

    user: ServiceUser
    home: Path
    daemons: list[Daemon]

    @property
    def out(self) -> Path:
        return self.home / "out"

    def daemon(self, start: bool = True, **settings: Any) -> Daemon:
        index = len(self.daemons)
        config = {**DEFAULT_TEST_CONFIG, "input_roots": [str(self.home / "inputs")], **settings}
        config_path = write_config(self.home / f"batchd{index}.toml", **config)
        config_path.chmod(0o644)
        daemon = Daemon(
            state_dir=self.home / f"state{index}",
            config_path=config_path,
            log_path=self.home / f"daemon{index}.log",
            prefix=self.user.setpriv(),
            python=str(self.user.python),
            cwd=self.home,
            env={
                "PYTHONPATH": str(self.user.pythonpath),
                "HOME": str(self.home),
                "USER": self.user.name,
                "LOGNAME": self.user.name,
            },
        )
        self.daemons.append(daemon)
        if start:
            daemon.start()
        return daemon

    def chown(self, path: Path) -> Path:
        os.chown(path, self.user.uid, self.user.gid)
        return path


@pytest.fixture
def service_box(service_user: ServiceUser) -> Iterator[ServiceBox]:
    home = Path(tempfile.mkdtemp(prefix="batchd-service-"))
    home.chmod(0o755)
    box = ServiceBox(service_user, home, [])
    box.chown(home)
    for folder in ("out", "inputs"):
        (home / folder).mkdir(mode=0o755)
        box.chown(home / folder)
    yield box
    close_all(box.daemons)
    for daemon in box.daemons:
        # pytest shows this only for a failed test.
        with contextlib.suppress(OSError):
            print(f"--- {daemon.log_path} ---\n{daemon.output()[-20000:]}")
            for job_log in sorted(daemon.state_dir.glob("logs/*.jsonl")):
                print(f"--- {job_log} ---\n{job_log.read_text(errors='replace')[-5000:]}")
    # Whatever the test's daemons left behind (workers of a daemon killed with -9) runs as
    # the test user, which nothing else on the box uses.
    subprocess.run(["pkill", "-KILL", "-u", service_user.name], check=False)
    shutil.rmtree(home, ignore_errors=True)


def process_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def owners(root: Path) -> dict[str, int]:
    """Every path under root (root included) with its owner's uid. A running daemon
    removes workspaces as its workers exit: what vanishes during the walk is not there."""
    found = {str(root): root.lstat().st_uid}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            with contextlib.suppress(FileNotFoundError):
                found[path] = os.lstat(path).st_uid
    return found


Project = Callable[..., Path]
