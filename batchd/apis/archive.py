"""Unpacking an uploaded project on the server: the archive is hostile until checked.

:mod:`batchd.packing` (standard library only) packs a project folder into a tar.gz on the
client. Here every member is checked before anything is written, and the survivors are
extracted into a read-only snapshot directory that appears atomically.
"""

from __future__ import annotations

import copy
import errno
import gzip
import io
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchd.apis.spec import ApiSpec, ProjectApi, project_apis
from batchd.errors import BadRequest, Invalid, TooLarge
from batchd.packing import (
    ENV_FILE,
    IGNORE_FILES,
    check_size,
    choose_config,
    compile_ignore,
    decode,
    human_size,
    parents,
    parse_dotenv,
    skipped,
)

if TYPE_CHECKING:
    from pathspec import GitIgnoreSpec

# Control files are read whole into memory, so they get a cap of their own.
_MAX_CONTROL_BYTES = 1 << 20
# tarfile reads PAX and GNU long-name headers whole; member data it reads in small chunks.
_MAX_SINGLE_READ = 1 << 20
_MAX_MEMBERS = 100_000
# Linux refuses longer file names (NAME_MAX); the other two keep a snapshot path, with the
# state directory in front of it, well inside PATH_MAX (4096), and tarfile's recursive
# makedirs inside Python's recursion limit.
_MAX_NAME_BYTES = 255
_MAX_PATH_BYTES = 1024
_MAX_PATH_DEPTH = 64
# Longer member names are shown shortened in errors: the head and the tail of the name.
_SHOWN_NAME_CHARS = 80
# The kernel gives up on symlink chains at 40 hops; so do we.
_MAX_LINK_HOPS = 40
_GZIP_MAGIC = b"\x1f\x8b"
_UNREADABLE = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)
# Python 3.11.4 added tarfile's extraction filters; Debian 12 ships 3.11.2. Where they exist,
# the data filter repeats our own member checks against the real disk.
_HAS_FILTERS = hasattr(tarfile, "data_filter")
_FILTER_ERRORS: tuple[type[Exception], ...] = (tarfile.FilterError,) if _HAS_FILTERS else ()
_SPECIAL_KINDS = {
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a fifo",
}


@dataclass(frozen=True)
class DeployedProject:
    # The APIs of the config file (batchd.toml defines one), in its order.
    apis: tuple[ProjectApi, ...]
    dotenv: dict[str, str]
    files: list[str]
    size: int
    # The config file the APIs came from, left out of the snapshot.
    config_file: str

    @property
    def spec(self) -> ApiSpec:
        """The API of a project that defines one, as batchd.toml always does."""
        if len(self.apis) != 1:
            raise ValueError(f"{self.config_file} defines {len(self.apis)} APIs, not one")
        return self.apis[0].spec


def unpack_project(
    archive: bytes, dest: Path, max_bytes: int, config: str | None = None, name: str | None = None
) -> DeployedProject:
    """Check `archive` and write its project files to `dest`. Its config is `config` (as
    :func:`batchd.packing.choose_config` picks it); `name` keeps only the API of that name."""
    if dest.exists():
        raise FileExistsError(dest)
    with _open_archive(archive) as tar:
        members = _scan(tar)
        _check_tree(members)
        config_file, config_text, env_text, ignore = _read_controls(tar, members, config)
        selected = [
            m
            for m in members.values()
            if not m.isdir() and m.name != config_file and not skipped(m.name, ignore)
        ]
        apis = project_apis(config_file, config_text, {m.name for m in selected}, name)
        dotenv = parse_dotenv(env_text or "")
        sizes = _written_sizes(selected)
        check_size(sizes, max_bytes)
        for api in apis:
            _check_python(api.spec.handler.python)
        handler_paths = [a.spec.handler.path for a in apis if a.spec.handler.path is not None]
        _write_snapshot(tar, selected, handler_paths, dest)
    return DeployedProject(
        apis=tuple(apis),
        dotenv=dotenv,
        files=sorted(m.name for m in selected),
        size=sum(sizes.values()),
        config_file=config_file,
    )


class _CappedReads:
    """The tar stream, refusing any single read big enough to be a decompression bomb."""

    def __init__(self, raw: io.BufferedIOBase) -> None:
        self._raw = raw

    def read(self, size: int = -1) -> bytes:
        if not 0 <= size <= _MAX_SINGLE_READ:
            raise TooLarge("archive has a tar header over 1 MiB", field="archive")
        return self._raw.read(size)

    def write(self, data: bytes) -> int:
        raise io.UnsupportedOperation("the archive is read-only")

    def tell(self) -> int:
        return self._raw.tell()

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        return self._raw.seek(pos, whence)

    def close(self) -> None:
        self._raw.close()


def _unreadable(exc: BaseException) -> BadRequest:
    return BadRequest(f"archive is not a readable tar file: {exc}", field="archive")


def _refused(name: str, problem: str) -> Invalid:
    return Invalid(f"archive member {_shown(name)} {problem}", field="archive")


def _shown(name: str) -> str:
    """The name quoted and escaped as Python would, with the middle of a long one left out."""
    if len(name) <= _SHOWN_NAME_CHARS:
        return repr(name)
    half = _SHOWN_NAME_CHARS // 2
    return f"{name[:half]!r}...{name[-half:]!r} ({len(name)} characters)"


def _open_archive(archive: bytes) -> tarfile.TarFile:
    raw: io.BufferedIOBase = io.BytesIO(archive)
    if archive.startswith(_GZIP_MAGIC):
        raw = gzip.GzipFile(fileobj=raw, mode="rb")
    try:
        # errorlevel=2 turns tarfile's merely logged extraction problems into exceptions.
        return tarfile.open(fileobj=_CappedReads(raw), mode="r:", errorlevel=2)
    except _UNREADABLE as exc:
        raise _unreadable(exc) from exc


def _scan(tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    """Every member, safety-checked and renamed to its normalised path, in archive order."""
    members: dict[str, tarfile.TarInfo] = {}
    try:
        while (raw := tar.next()) is not None:
            if len(members) >= _MAX_MEMBERS:
                raise TooLarge(f"archive has over {_MAX_MEMBERS} members", field="archive")
            member = _checked_member(raw)
            previous = members.get(member.name)
            if previous is not None and not (previous.isdir() and member.isdir()):
                raise _refused(raw.name, "appears more than once")
            members[member.name] = member
    except _UNREADABLE as exc:
        raise _unreadable(exc) from exc
    return members


def _checked_member(raw: tarfile.TarInfo) -> tarfile.TarInfo:
    if "\0" in raw.name or "\0" in raw.linkname:
        raise _refused(raw.name, "contains a NUL byte")
    # tarfile keeps bytes that are not UTF-8 as surrogates; no snapshot path may hold them.
    if not _utf8(raw.name) or not _utf8(raw.linkname):
        raise _refused(raw.name, "has a path that is not UTF-8")
    problem = _length_problem(raw.name) or _length_problem(raw.linkname)
    if problem is not None:
        raise _refused(raw.name, problem)
    if raw.name.startswith("/"):
        raise _refused(raw.name, "has an absolute path")
    parts = [part for part in raw.name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise _refused(raw.name, "has a '..' path component")
    if raw.type in _SPECIAL_KINDS:
        raise _refused(raw.name, f"is {_SPECIAL_KINDS[raw.type]}")
    if not (raw.isreg() or raw.isdir() or raw.issym() or raw.islnk()):
        raise _refused(raw.name, f"has unsupported tar type {raw.type!r}")
    if not parts and not raw.isdir():
        raise _refused(raw.name, "has an empty path")
    if raw.issym() and (not raw.linkname or raw.linkname.startswith("/")):
        raise _refused(raw.name, f"is a symlink to {_shown(raw.linkname)}, outside the project")
    member = _copy(raw, name="/".join(parts))
    if raw.islnk():
        member.linkname = _hardlink_target(raw)
    return member


def _copy(member: tarfile.TarInfo, **changes: Any) -> tarfile.TarInfo:
    """TarInfo.replace(deep=False), which Python only has from 3.11.4."""
    changed = copy.copy(member)
    for key, value in changes.items():
        setattr(changed, key, value)
    return changed


def _length_problem(path: str) -> str | None:
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if len(parts) > _MAX_PATH_DEPTH:
        return f"is {len(parts)} folders deep, over the {_MAX_PATH_DEPTH} allowed"
    longest = max((len(part.encode()) for part in parts), default=0)
    if longest > _MAX_NAME_BYTES:
        return f"has a file name of {longest} bytes, over the {_MAX_NAME_BYTES} allowed"
    size = len(path.encode())
    if size > _MAX_PATH_BYTES:
        return f"has a path of {size} bytes, over the {_MAX_PATH_BYTES} allowed"
    return None


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _hardlink_target(raw: tarfile.TarInfo) -> str:
    # Hard link targets are archive paths, relative to the root, not to the member's folder.
    parts = [part for part in raw.linkname.split("/") if part not in ("", ".")]
    if raw.linkname.startswith("/") or ".." in parts or not parts:
        raise _refused(raw.name, f"is a hard link to {_shown(raw.linkname)}, outside the project")
    return "/".join(parts)


def _check_tree(members: Mapping[str, tarfile.TarInfo]) -> None:
    """Checks that need the whole archive: where paths and links really lead once written."""
    links = {name: m.linkname for name, m in members.items() if m.issym()}
    for name, member in members.items():
        for parent in parents(name):
            if parent in members and not members[parent].isdir():
                raise _refused(name, f"is inside {parent!r}, which is not a directory")
        if member.issym():
            problem = _symlink_problem(name, links)
            if problem is not None:
                raise _refused(name, problem)
        if member.islnk():
            _check_hardlink(member, members)


def _symlink_problem(name: str, links: Mapping[str, str]) -> str | None:
    """Resolve `name` as the kernel would inside the snapshot, following the archive's links.

    A purely textual check is not enough: with ``s/up -> ..``, the link ``a -> s/up/../x``
    looks like ``s/x`` but really leads out of the project.
    """
    resolved = name.split("/")[:-1]
    pending = links[name].split("/")
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not resolved:
                return f"is a symlink to {links[name]!r}, which resolves outside the project"
            resolved.pop()
            continue
        candidate = "/".join([*resolved, part])
        if candidate not in links:
            resolved.append(part)
            continue
        hops += 1
        if hops > _MAX_LINK_HOPS:
            return "is part of a symlink loop"
        pending = links[candidate].split("/") + pending
    return None


def _check_hardlink(member: tarfile.TarInfo, members: Mapping[str, tarfile.TarInfo]) -> None:
    target = members.get(member.linkname)
    # Earlier in the archive, so it is already on disk when the link is made.
    if target is None or not target.isreg() or target.offset >= member.offset:
        raise _refused(member.name, f"is a hard link to {member.linkname!r}, not an earlier file")


def _read_controls(
    tar: tarfile.TarFile, members: Mapping[str, tarfile.TarInfo], config: str | None
) -> tuple[str, str, str | None, GitIgnoreSpec | None]:
    """The config file's name and text, the .env text and the ignore file that applies."""
    config_file = choose_config(lambda name: name in members, config, "archive")
    config_text = _read_control(tar, members, config_file)
    assert config_text is not None
    env_text = _read_control(tar, members, ENV_FILE)
    ignore_file = next((name for name in IGNORE_FILES if name in members), None)
    ignore_text = None if ignore_file is None else _read_control(tar, members, ignore_file)
    ignore = None if ignore_text is None else compile_ignore(ignore_text, str(ignore_file))
    return config_file, config_text, env_text, ignore


def _read_control(
    tar: tarfile.TarFile, members: Mapping[str, tarfile.TarInfo], name: str
) -> str | None:
    member = members.get(name)
    if member is None:
        return None
    if not member.isreg():
        raise Invalid(f"{name} must be a regular file", field=name)
    if member.size > _MAX_CONTROL_BYTES:
        raise TooLarge(f"{name} is over {human_size(_MAX_CONTROL_BYTES)}", field=name)
    try:
        stream = tar.extractfile(member)
        data = stream.read(member.size) if stream is not None else b""
    except _UNREADABLE as exc:
        raise _unreadable(exc) from exc
    return decode(data, name)


def _written_sizes(selected: list[tarfile.TarInfo]) -> dict[str, int]:
    regular = {m.name: m.size for m in selected if m.isreg()}
    sizes: dict[str, int] = {}
    for member in selected:
        if member.islnk():
            if member.linkname not in regular:
                raise _refused(member.name, f"is a hard link to excluded {member.linkname!r}")
            # Another name for its target, which the snapshot then holds twice.
            sizes[member.name] = regular[member.linkname]
        else:
            sizes[member.name] = member.size if member.isreg() else 0
    return sizes


def _check_python(python: str | None) -> None:
    if python is not None and not (os.path.isfile(python) and os.access(python, os.X_OK)):
        raise Invalid(
            f"handler.python {python!r} is not an executable file", field="handler.python"
        )


def _write_snapshot(
    tar: tarfile.TarFile,
    selected: Iterable[tarfile.TarInfo],
    handler_paths: Iterable[str],
    dest: Path,
) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    # A sibling, so the final rename is atomic and a failed upload never shows up as `dest`.
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        for member in selected:
            _extract(tar, member, staging)
        for handler_path in handler_paths:
            if not (staging / handler_path).is_file():
                raise Invalid(
                    f"handler.path {handler_path!r} is not a file in the uploaded project "
                    f"(missing, or excluded by {' or '.join(IGNORE_FILES)} or the built-in "
                    "rules)",
                    field="handler.path",
                )
        _make_read_only(staging)
        os.rename(staging, dest)
    except BaseException:
        remove_snapshot(staging)
        raise


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, staging: Path) -> None:
    try:
        if _HAS_FILTERS:
            tar.extract(member, staging, filter="data")
        else:
            # What the data filter would do to ownership: files belong to the daemon's
            # user, never to the uid named in the archive (extract chowns as root).
            owned = _copy(member, uid=os.getuid(), gid=os.getgid(), uname="", gname="")
            tar.extract(owned, staging, numeric_owner=True)
    except _FILTER_ERRORS as exc:
        raise _refused(member.name, f"refused by tarfile: {exc}") from exc
    except OSError as exc:
        # Our own limits leave room for the state directory's path; a very long one may not.
        if exc.errno != errno.ENAMETOOLONG:
            raise
        raise _refused(member.name, "has a path too long for this file system") from exc
    except _UNREADABLE as exc:
        raise _unreadable(exc) from exc


def _make_read_only(tree: Path) -> None:
    for folder, _, names in os.walk(tree):
        os.chmod(folder, 0o555)
        for name in names:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                executable = os.stat(path).st_mode & stat.S_IXUSR
                os.chmod(path, 0o555 if executable else 0o444)


def remove_snapshot(path: Path) -> None:
    """Delete a snapshot written by :func:`unpack_project` despite its read-only folders."""
    for folder, _, _ in os.walk(path):
        os.chmod(folder, 0o755)
    shutil.rmtree(path)
