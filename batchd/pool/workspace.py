"""Each worker's private, writable working directory (its workspace).

    <state>/work/                  0700; emptied when the daemon starts and stops
      <job>-<slot>-<hex>/          one worker's workspace, removed when the worker exits
        project/                   a copy of the API's snapshot: the worker's cwd
        tmp/                       the worker's TMPDIR
      ready-<hex>/                 the same, prepared ahead of need for a recent snapshot

The deployed snapshot stays read-only and shared; what a handler writes goes to its own
copy, and every worker starts from the snapshot as deployed. Hard links would be cheaper
but not safe: a handler runs as the daemon's user, owns the snapshot's files, and could
chmod and change a linked file for everyone.

A file is copied as a reflink (FICLONE) where the filesystem shares blocks (btrfs, XFS),
else in the kernel (copy_file_range), else by reading and writing. Creating files costs
the most (a thousand small files can take hundreds of milliseconds on a busy disk), so,
as with the spare worker, a copy of each recently used snapshot is prepared in the
background (once a worker of the API has begun its first batch) and the next worker of
that API takes it with a rename.

The disk a workspace uses is measured now and then (a walk of its tree, in a thread,
rarer when the walk is slow); a worker over its limit is killed with a reason that names
the limit. The bound covers the workspace only, not writes elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import secrets
import shutil
import stat
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchd import constants

log = logging.getLogger("batchd.workspace")

READY_PREFIX = "ready-"
# linux/fs.h: _IOW(0x94, 9, int)
FICLONE = 0x40049409
# copy_file_range copies at most this much per call.
COPY_CHUNK = 1 << 30
READ_CHUNK = 1 << 20
# copy_file_range cannot serve these files (another filesystem, an old kernel): fall back.
_NO_COPY_RANGE = frozenset({errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP})
# Seconds between tries at removing a tree whose processes may still be dying.
_REMOVE_RETRY_DELAY = 0.05


@dataclass
class Workspace:
    path: Path
    # The snapshot it is a copy of.
    snapshot: Path
    # Bytes of disk the workspace may use; None: unbounded.
    limit: int | None
    # Why the worker was killed, when it went over its limit.
    over_limit: str | None = None

    @property
    def project(self) -> Path:
        return self.path / constants.WORKSPACE_PROJECT

    @property
    def tmp(self) -> Path:
        return self.path / constants.WORKSPACE_TMP

    def env(self) -> dict[str, str]:
        return {"TMPDIR": str(self.tmp)}

    async def watch(self, alive: Callable[[], bool]) -> str | None:
        """Measure the workspace now and then while `alive()`; the reason once it is over
        its limit (also kept in `over_limit`), None once the worker is gone."""
        if self.limit is None:
            return None
        interval = constants.WORKSPACE_CHECK_INTERVAL
        while True:
            await asyncio.sleep(interval)
            if not alive():
                return None
            started = time.monotonic()
            used = await asyncio.to_thread(disk_usage, self.path)
            spent = time.monotonic() - started
            if used > self.limit and alive():
                self.over_limit = (
                    f"worker's workspace went over its disk limit: {_mib(used)} used, "
                    f"{_mib(self.limit)} allowed ([compute] disk or max_workspace_size)"
                )
                return self.over_limit
            interval = max(
                constants.WORKSPACE_CHECK_INTERVAL, spent * constants.WORKSPACE_CHECK_COST_RATIO
            )


class Workspaces:
    """The workspaces under one root: created from snapshots, removed, swept."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._copier = _Copier()
        # Per snapshot, the task preparing (or that prepared) a copy of it; oldest first.
        self._ready: OrderedDict[Path, asyncio.Task[Path | None]] = OrderedDict()
        self._background: set[asyncio.Task[Any]] = set()

    def sweep(self) -> None:
        """Remove every workspace: those of workers gone with a killed daemon too. Only
        while no worker runs (at start, at stop)."""
        self.root.mkdir(parents=True, exist_ok=True)
        # The daemon's alone, whatever the state directory's own mode.
        os.chmod(self.root, 0o700)
        with os.scandir(self.root) as entries:
            names = [entry.path for entry in entries]
        for path in names:
            if not remove_tree(Path(path)):
                log.warning("cannot remove a workspace", extra={"path": path})

    async def create(self, snapshot: Path, name: str, limit: int | None) -> Workspace:
        """A workspace holding a fresh copy of `snapshot` (read-only, never written to)."""
        path = self.root / f"{name}-{secrets.token_hex(4)}"
        prepared = await self._take_ready(snapshot)
        if prepared is not None:
            try:
                os.rename(prepared, path)
            except OSError:
                self._remove_later(prepared)
                prepared = None
        if prepared is None:
            await asyncio.to_thread(self._prepare, snapshot, path)
        return Workspace(path, snapshot, limit)

    async def remove(self, workspace: Workspace) -> None:
        if not await asyncio.to_thread(remove_tree, workspace.path):
            log.warning("cannot remove a workspace", extra={"path": str(workspace.path)})

    async def close(self) -> None:
        """Stop preparing, and remove every workspace (the workers are gone)."""
        for task in self._ready.values():
            self._remove_later_when_done(task)
        self._ready.clear()
        await asyncio.gather(*self._background, return_exceptions=True)
        await asyncio.to_thread(self.sweep)

    async def _take_ready(self, snapshot: Path) -> Path | None:
        task = self._ready.pop(snapshot, None)
        if task is None:
            return None
        # One still being copied is further along than a copy started now.
        (result,) = await asyncio.gather(task, return_exceptions=True)
        return result if isinstance(result, Path) else None

    def keep_ready(self, snapshot: Path) -> None:
        """Have a copy of `snapshot` prepared for the next worker that needs one: called
        once a worker has begun its first batch, so that copying (tens of ms for a big
        file, hundreds for many small ones) never competes with a worker's start."""
        if snapshot in self._ready:
            self._ready.move_to_end(snapshot)
            return
        self._ready[snapshot] = asyncio.create_task(self._prepare_ready(snapshot))
        while len(self._ready) > constants.WORKSPACES_READY_MAX:
            _, oldest = self._ready.popitem(last=False)
            self._remove_later_when_done(oldest)

    async def _prepare_ready(self, snapshot: Path) -> Path | None:
        path = self.root / f"{READY_PREFIX}{secrets.token_hex(4)}"
        try:
            await asyncio.to_thread(self._prepare, snapshot, path)
        except OSError as exc:
            # The snapshot may be gone (its API deleted): the next worker copies anew.
            log.warning(
                "cannot prepare a workspace", extra={"snapshot": str(snapshot), "error": str(exc)}
            )
            return None
        return path

    def _prepare(self, snapshot: Path, path: Path) -> None:
        path.mkdir(mode=0o700)
        try:
            copy_tree(snapshot, path / constants.WORKSPACE_PROJECT, self._copier)
            (path / constants.WORKSPACE_TMP).mkdir(mode=0o700)
        except BaseException:
            remove_tree(path)
            raise

    def _remove_later_when_done(self, task: asyncio.Task[Path | None]) -> None:
        async def remove() -> None:
            (result,) = await asyncio.gather(task, return_exceptions=True)
            if isinstance(result, Path):
                await asyncio.to_thread(remove_tree, result)

        self._track(asyncio.create_task(remove()))

    def _remove_later(self, path: Path) -> None:
        self._track(asyncio.create_task(asyncio.to_thread(remove_tree, path)))

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._background.add(task)
        task.add_done_callback(self._background.discard)


class _Copier:
    """Copies one file's bytes by the cheapest way this filesystem allows; a way that
    fails once for want of support is not tried again."""

    def __init__(self) -> None:
        self.clone = True
        self.copy_range = hasattr(os, "copy_file_range")

    def copy(self, source: str, target: str, mode: int) -> None:
        src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
        try:
            dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
            try:
                self._copy_fd(src, dst)
            finally:
                os.close(dst)
        finally:
            os.close(src)

    def _copy_fd(self, src: int, dst: int) -> None:
        if self.clone:
            try:
                fcntl.ioctl(dst, FICLONE, src)
                return
            except OSError:
                # ext4, tmpfs, another filesystem: no shared blocks here.
                self.clone = False
        if self.copy_range:
            try:
                while os.copy_file_range(src, dst, COPY_CHUNK):
                    pass
                return
            except OSError as exc:
                if exc.errno not in _NO_COPY_RANGE:
                    raise
                self.copy_range = False
                os.lseek(src, 0, os.SEEK_SET)
                os.lseek(dst, 0, os.SEEK_SET)
                os.ftruncate(dst, 0)
        while chunk := os.read(src, READ_CHUNK):
            view = memoryview(chunk)
            while view:
                view = view[os.write(dst, view) :]


def copy_tree(source: Path, target: Path, copier: _Copier | None = None) -> None:
    """Copy a snapshot: folders, files and links as they are, all writable by us."""
    copier = copier or _Copier()
    os.mkdir(target, 0o755)
    stack = [(str(source), str(target))]
    while stack:
        source_dir, target_dir = stack.pop()
        with os.scandir(source_dir) as entries:
            for entry in entries:
                path = os.path.join(target_dir, entry.name)
                if entry.is_symlink():
                    # Snapshot links are relative and stay inside it: they do in the copy.
                    os.symlink(os.readlink(entry.path), path)
                elif entry.is_dir():
                    os.mkdir(path, 0o755)
                    stack.append((entry.path, path))
                elif entry.is_file():
                    executable = entry.stat().st_mode & stat.S_IXUSR
                    copier.copy(entry.path, path, 0o755 if executable else 0o644)


def disk_usage(root: Path) -> int:
    """Bytes of disk a tree takes: allocated blocks (a sparse file counts what it holds),
    a file with several links once."""
    total = 0
    seen: set[tuple[int, int]] = set()
    stack = [str(root)]
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except OSError:
            # Removed (or made unreadable) while we walked.
            continue
        with entries:
            for entry in entries:
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(info.st_mode):
                    stack.append(entry.path)
                elif info.st_nlink > 1:
                    key = (info.st_dev, info.st_ino)
                    if key in seen:
                        continue
                    seen.add(key)
                total += info.st_blocks * 512
    return total


def remove_tree(path: Path) -> bool:
    """Remove a tree, whatever its handler did to it (read-only folders, processes still
    writing as they die); False when something is left."""
    if os.path.islink(path):
        os.unlink(path)
        return True
    for attempt in range(constants.WORKSPACE_REMOVE_TRIES):
        if attempt:
            time.sleep(_REMOVE_RETRY_DELAY)
            _open_folders(str(path))
        try:
            shutil.rmtree(path, ignore_errors=True)
        except RecursionError:
            # shutil.rmtree recurses once a level: a handler can nest folders deeper.
            with contextlib.suppress(OSError):
                _remove_deep(str(path))
        if not os.path.lexists(path):
            return True
    return False


def _remove_deep(top: str) -> None:
    """Remove a tree of any depth and path length with one folder open at a time: go down
    to a folder with no folder in it, empty it, climb back by "..", remove it. Raises
    OSError where something cannot be removed (the caller tries again)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    fd = os.open(top, flags)
    # The names of the folders from `top` down to the one open.
    names: list[str] = []
    try:
        while True:
            os.fchmod(fd, 0o700)
            child = None
            with os.scandir(fd) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        child = entry.name
                        break
                    os.unlink(entry.name, dir_fd=fd)
            if child is not None:
                below = os.open(child, flags, dir_fd=fd)
                os.close(fd)
                fd = below
                names.append(child)
                continue
            if not names:
                break
            above = os.open("..", flags, dir_fd=fd)
            os.close(fd)
            fd = above
            os.rmdir(names.pop(), dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(top)


def _open_folders(top: str) -> None:
    """Make every folder of a tree ours to empty (a handler may have closed some)."""
    stack = [top]
    while stack:
        folder = stack.pop()
        with contextlib.suppress(OSError):
            os.chmod(folder, 0o700)
        try:
            with os.scandir(folder) as entries:
                stack.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))
        except OSError:
            continue


def _mib(size: int) -> str:
    return f"{size / 1024**2:.1f} MiB ({size} bytes)"
