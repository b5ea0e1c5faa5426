"""Per-API venvs: a project's requirements installed at deploy time, shared by key.

A venv's key is the hash of the requirements' bytes, the packages added for Cortex
projects and the daemon's base interpreter (path and version): APIs and versions with the
same requirements share one venv, and a redeploy with unchanged requirements finds it
ready. A venv is built in its final folder (pip writes that path into the scripts it
installs, so a venv cannot be moved once built) under an exclusive ``fcntl.flock`` on its
key, and counts as ready only once :data:`READY_FILE` is in it, written last: a crash or a
failed pip leaves a folder without it, which the next build of that key removes first.

Each state dir (a daemon, a node of a cluster) that uses a venv leaves a mark in its
:data:`USERS_DIR`; a venv is removed once no live state dir marks it, so a ``venv_dir``
shared by several daemons (or a whole test session) never loses a venv one of them uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import hashlib
import importlib.metadata
import json
import os
import secrets
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from batchd.apis.spec import HandlerSpec
from batchd.config import DeploySettings
from batchd.errors import Invalid

Progress = Callable[[str], None]

REQUIREMENTS_FILE = "requirements.txt"
REQUIREMENTS_FIELD = "handler.requirements"
# Cortex's handler image had boto3 (python/serve/cortex_internal.requirements.txt pins
# boto3==1.14.53, which predates Python 3.11): Cortex handlers import it unlisted.
CORTEX_PACKAGES = ("boto3",)
READY_FILE = "batchd-venv.json"
USERS_DIR = "batchd-users"
PIP_LOG = "pip.log"
FAILED_DIR = ".failed"
LOCKS_DIR = ".locks"
FAILED_LOG_SECONDS = 7 * 86400
# The end of pip's output that a failed deploy's 422 carries: where it says what failed.
ERROR_TAIL_LINES = 15
LOCK_POLL_SECONDS = 0.1
CHUNK = 64 * 1024


class VenvBuildFailed(Exception):
    """python -m venv or pip install failed; the message holds the tail of its output."""


@dataclass(frozen=True)
class Requirements:
    """What an API's venv installs: a pip file of the project and packages added."""

    file: str | None
    text: bytes
    packages: tuple[str, ...]
    field: str

    def key(self) -> str:
        base = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
        digest = hashlib.sha256(b"batchd-venv-1\0")
        for part in (base, sys.version, "\n".join(self.packages)):
            digest.update(part.encode() + b"\0")
        digest.update(self.text)
        return digest.hexdigest()[:32]


def requirements_of(root: Path, handler: HandlerSpec) -> Requirements | None:
    """The requirements of the project at `root`, or None when it needs no venv.

    ``handler.requirements`` names the file (a 422 when it is missing); without it, a
    requirements.txt at the root is used when there is one.
    """
    packages = CORTEX_PACKAGES if handler.cortex_modules else ()
    if handler.requirements is not None:
        file, field = handler.requirements, REQUIREMENTS_FIELD
        if not (root / file).is_file():
            raise Invalid(f"{field}: {file} is not a file in the project", field=field)
    elif (root / REQUIREMENTS_FILE).is_file():
        file, field = REQUIREMENTS_FILE, REQUIREMENTS_FILE
    elif packages:
        return Requirements(None, b"", packages, REQUIREMENTS_FIELD)
    else:
        return None
    return Requirements(file, (root / file).read_bytes(), packages, field)


class VenvStore:
    """The venvs under one folder, as this state dir uses them."""

    def __init__(self, root: Path, settings: DeploySettings, state_dir: Path) -> None:
        self.root = root
        self.settings = settings
        self._state_dir = str(state_dir)
        self._user = hashlib.sha256(self._state_dir.encode()).hexdigest()[:16]

    def folder(self, key: str) -> Path:
        return self.root / key

    def python(self, key: str) -> Path:
        return self.folder(key) / "bin" / "python"

    def ready(self, key: str) -> bool:
        return (self.folder(key) / READY_FILE).is_file()

    async def ensure(
        self,
        requirements: Requirements,
        project: Path,
        progress: Progress | None = None,
        key: str | None = None,
    ) -> str:
        """The key of a ready venv with `requirements`, built (from `project`, where pip
        runs) when missing. `key`: the one a stored version names (built on another node
        or before a restart), in place of the one computed here."""
        key = key or requirements.key()
        async with self._locked(key, progress):
            if not self.ready(key):
                await self._build(key, requirements, project, progress or _ignore)
            await asyncio.to_thread(self._mark_used, key)
        return key

    @contextlib.asynccontextmanager
    async def _locked(self, key: str, progress: Progress | None) -> AsyncIterator[None]:
        """The key's lock, shared by every process on this machine. Polled, not waited
        on in a thread: a deploy cancelled while it waits leaves no lock behind."""
        locks = self.root / LOCKS_DIR
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / f"{key}.lock", "a+b") as lock:
            told = False
            while not _try_lock(lock.fileno()):
                if not told and progress is not None:
                    progress("waiting for another deploy that is building the same venv")
                    told = True
                await asyncio.sleep(LOCK_POLL_SECONDS)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    async def _build(
        self, key: str, requirements: Requirements, project: Path, progress: Progress
    ) -> None:
        folder = self.folder(key)
        if folder.exists():
            # A build cut off by a crash: never ready, so never used.
            await asyncio.to_thread(shutil.rmtree, folder)
        folder.mkdir(parents=True)
        log_path = folder.parent / f".{key}.log"
        progress(f"creating a venv for {requirements.file or 'the Cortex packages'}")
        try:
            with open(log_path, "wb") as log:
                async with asyncio.timeout(self.settings.venv_timeout):
                    venv = [sys.executable, "-m", "venv", str(folder)]
                    if _own_pip():
                        venv.insert(3, "--without-pip")
                    await _run(venv, project, log, None)
                    await _run(self._pip_install(key, requirements), project, log, progress)
        except (TimeoutError, VenvBuildFailed) as exc:
            kept = await asyncio.to_thread(self._keep_failed_log, key, log_path)
            await asyncio.to_thread(shutil.rmtree, folder, True)
            if isinstance(exc, TimeoutError):
                message = f"took over {self.settings.venv_timeout:g}s ([deploy] venv_timeout)"
            else:
                message = f"failed:\n{exc}"
            raise Invalid(
                f"installing {requirements.file or ', '.join(requirements.packages)} into the "
                f"API's venv {message}\n(pip's log: {kept})",
                field=requirements.field,
            ) from None
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, folder, True)
            log_path.unlink(missing_ok=True)
            raise
        log_path.rename(folder / PIP_LOG)
        ready = {
            "key": key,
            "requirements": requirements.file,
            "packages": list(requirements.packages),
            "python": sys.version,
            "built_at": time.time(),
        }
        scratch = folder / f".{READY_FILE}.tmp"
        scratch.write_text(json.dumps(ready))
        scratch.rename(folder / READY_FILE)
        progress("the venv is ready")

    def _pip_install(self, key: str, requirements: Requirements) -> list[str]:
        python = str(self.python(key))
        if _own_pip():
            command = [sys.executable, "-m", "pip", "--python", python, "install"]
        else:
            command = [python, "-m", "pip", "install"]
        command += ["--disable-pip-version-check", "--no-input", "--progress-bar", "off"]
        for link in self.settings.find_links:
            command += ["--find-links", link]
        if self.settings.no_index:
            command.append("--no-index")
        if requirements.file is not None:
            command += ["-r", requirements.file]
        return command + list(requirements.packages)

    def _keep_failed_log(self, key: str, log_path: Path) -> Path:
        failed = self.root / FAILED_DIR
        failed.mkdir(exist_ok=True)
        now = time.time()
        for old in failed.iterdir():
            with contextlib.suppress(OSError):
                if old.stat().st_mtime < now - FAILED_LOG_SECONDS:
                    old.unlink()
        kept = failed / f"{key}-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}.log"
        log_path.rename(kept)
        return kept

    def _mark_used(self, key: str) -> None:
        users = self.folder(key) / USERS_DIR
        users.mkdir(exist_ok=True)
        mark = users / self._user
        if not mark.is_file():
            mark.write_text(self._state_dir)

    def sweep(
        self, in_use: set[str], deploying: Callable[[], Collection[str]] = tuple
    ) -> list[str]:
        """Mark the venvs this state dir uses; remove those no live state dir marks
        (and builds cut off by a crash). `deploying` gives the keys of deploys under way,
        asked again under each key's lock: `in_use` was read before this ran, and a deploy
        may have begun to use a venv since. Blocking: run it in a thread. Returns the keys
        removed."""
        if not self.root.is_dir():
            return []
        removed = []
        for folder in sorted(self.root.iterdir()):
            key = folder.name
            if key.startswith(".") or not folder.is_dir():
                continue
            if key in in_use:
                if self.ready(key):
                    self._mark_used(key)
                continue
            with self._lock_now(key) as locked:
                # Held elsewhere: a build or a deploy of this key is under way.
                if not locked or key in deploying():
                    continue
                (folder / USERS_DIR / self._user).unlink(missing_ok=True)
                if not _live_users(folder / USERS_DIR):
                    shutil.rmtree(folder, ignore_errors=True)
                    removed.append(key)
        return removed

    @contextlib.contextmanager
    def _lock_now(self, key: str) -> Iterator[bool]:
        (self.root / LOCKS_DIR).mkdir(exist_ok=True)
        with open(self.root / LOCKS_DIR / f"{key}.lock", "a+b") as lock:
            locked = _try_lock(lock.fileno())
            try:
                yield locked
            finally:
                if locked:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


@functools.cache
def _own_pip() -> bool:
    """Whether the daemon's pip can install into another interpreter (pip --python, from
    22.3): then a venv is made without a pip of its own, which saves seconds a build."""
    try:
        major, minor = importlib.metadata.version("pip").split(".")[:2]
        return (int(major), int(minor)) >= (22, 3)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return False


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _live_users(users: Path) -> bool:
    """Whether a state dir that still exists marks the venv (a deleted one does not)."""
    if not users.is_dir():
        return False
    for mark in users.iterdir():
        with contextlib.suppress(OSError, UnicodeDecodeError):
            if Path(mark.read_text()).is_dir():
                return True
    return False


def _ignore(line: str) -> None:
    pass


async def _run(command: list[str], cwd: Path, log: BinaryIO, progress: Progress | None) -> None:
    """Run `command` with the daemon's environment (pip.conf, PIP_* variables), its output
    into `log` and, line by line, to `progress`; VenvBuildFailed with the output's tail."""
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        # Its own group: a timeout also ends what pip started (a build backend).
        start_new_session=True,
    )
    assert process.stdout is not None
    tail: list[str] = []
    pending = b""
    try:
        while chunk := await process.stdout.read(CHUNK):
            log.write(chunk)
            *lines, pending = (pending + chunk).split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace").rstrip()
                if line:
                    tail = [*tail[-ERROR_TAIL_LINES + 1 :], line]
                    if progress is not None:
                        progress(line)
            # A line with no end in sight is kept short.
            pending = pending[-CHUNK:]
        code = await process.wait()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        if process.returncode is None:
            await process.wait()
    if pending.strip():
        tail = [*tail[-ERROR_TAIL_LINES + 1 :], pending.decode(errors="replace").rstrip()]
    if code != 0:
        raise VenvBuildFailed("\n".join(tail) or f"{command[2]} exited with code {code}")
