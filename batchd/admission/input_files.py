"""The files a job reads: choosing them (local files under ``input_roots``, S3 objects by
key prefix) through the includes and excludes, and reading the items of a delimited file
(one JSON value a line).

Nothing local resolves outside the daemon's ``input_roots``, symlinks included; every
refusal is a domain error whose field names the path the user gave. A local path that names
nothing is a prefix, as an S3 key is: ``/data/images/img`` is every entry of ``/data/images``
whose name starts with ``img`` (its files, and everything below its folders).
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from batchd.admission.globs import compile_glob, path_selected
from batchd.admission.job_body import FileSource
from batchd.admission.json_text import ENCODER, loads
from batchd.admission.s3_files import S3Objects, is_s3_url
from batchd.errors import Forbidden, Invalid

# A delimited line is read up to this many times max_item_size and no further: as
# written it may be longer than its item re-encoded (a \u00e9 escape is 6 bytes for 2),
# but a longer line cannot be worth reading whole (a 1 GiB line would be held in memory).
LINE_BYTES_PER_ITEM_BYTE = 6


def select_files(
    source: FileSource, kind: str, input_roots: Sequence[Path], s3: S3Objects
) -> list[str]:
    """Every file the source names that the includes and excludes keep, sorted, each once:
    local paths as given, S3 objects as ``s3://bucket/key`` URLs."""
    key = f"{kind}.{source.paths_key}"
    if not input_roots and not all(map(is_s3_url, source.paths)):
        raise Forbidden(
            f"{kind} is disabled: reading local files needs `input_roots` in the daemon config",
            key,
        )
    roots = [os.path.realpath(root) for root in input_roots]
    includes = [compile_glob(pattern) for pattern in source.includes]
    excludes = [compile_glob(pattern) for pattern in source.excludes]
    selected: set[str] = set()
    for index, given in enumerate(source.paths):
        field = f"{key}[{index}]"
        listed = s3.list(given, field) if is_s3_url(given) else _list_path(given, roots, field)
        for path in listed:
            if path_selected(path, includes, excludes):
                if kind == "file_path_lister":
                    _require_utf8_name(path, field)
                selected.add(path)
    if not selected:
        hint = (
            " (a pattern matches the whole path, s3://bucket/ or / included: "
            "start it with ** to match at any depth)"
            if source.includes
            else ""
        )
        raise Invalid(
            f"job has no batches: no files under {key} match the includes and excludes{hint}",
            key,
        )
    return sorted(selected)


def _require_utf8_name(path: str, field: str) -> None:
    """file_path_lister hands each path to the handler as JSON text, which holds UTF-8 only:
    a name in another encoding is refused rather than sent changed or left out unsaid."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise Invalid(
            f"{shown_path(path)} is not a UTF-8 path (its bytes are shown as \\xNN "
            "escapes): file_path_lister sends paths to the handler as JSON text, which "
            "cannot hold it; rename the file or leave it out with excludes",
            field,
        ) from None


def _list_path(given: str, roots: list[str], field: str) -> Iterator[str]:
    """The files ``given`` names, refusing anything that resolves outside every root."""
    # realpath() cannot take a NUL, and no file name holds one.
    if "\0" in given:
        raise Forbidden(f"{given!r} is not an allowed path", field)
    # A relative path would depend on the daemon's working directory.
    if not os.path.isabs(given):
        raise Invalid(f"{given!r} is not an absolute path", field)
    if not _under_roots(given, roots):
        raise Forbidden(f"{given!r} is outside the daemon's input_roots", field)
    try:
        mode = os.stat(given).st_mode
    except OSError as exc:
        prefixed = _by_prefix(given, roots, field) if exc.errno == errno.ENOENT else None
        if prefixed is None:
            raise Invalid(f"{given!r} cannot be read: {exc.strerror}", field) from exc
        return prefixed
    if stat.S_ISREG(mode):
        return iter([given])
    if stat.S_ISDIR(mode):
        return _walk(given, roots, field)
    raise Invalid(f"{given!r} is neither a regular file nor a directory", field)


def _by_prefix(given: str, roots: list[str], field: str) -> Iterator[str] | None:
    """The files under the entries of ``given``'s folder whose names start with its last
    part, as S3 lists a key prefix; None when there are none (or no such folder)."""
    folder, name = os.path.split(given)
    if not name or not os.path.isdir(folder) or not _under_roots(folder, roots):
        return None
    found = _walk(folder, roots, field, name_prefix=name)
    first = next(found, None)
    return None if first is None else itertools.chain([first], found)


def _walk(top: str, roots: list[str], field: str, name_prefix: str = "") -> Iterator[str]:
    """Regular files below ``top``, in sorted order, following symlinks within roots; with
    ``name_prefix``, only below those of ``top``'s entries whose names start with it.

    Iterative, with each directory's real path built from its parent's (only a symlink
    is resolved): neither the depth of a tree nor its length of paths makes it costly."""
    real = os.path.realpath(top)
    # The directories being listed, outermost first, and their real paths.
    stack = [(_entries(top, field, name_prefix), real)]
    ancestors = {real}
    while stack:
        entries, parent = stack[-1]
        entry = next(entries, None)
        if entry is None:
            ancestors.discard(parent)
            stack.pop()
            continue
        try:
            link = entry.is_symlink()
            if link and not _under_roots(entry.path, roots):
                raise Forbidden(
                    f"{shown_path(entry.path)} links outside the daemon's input_roots", field
                )
            if entry.is_dir():
                real = os.path.realpath(entry.path) if link else os.path.join(parent, entry.name)
                # A link back to an ancestor would make the walk endless.
                if real not in ancestors:
                    ancestors.add(real)
                    stack.append((_entries(entry.path, field), real))
            elif entry.is_file():
                yield entry.path
            # Anything else (sockets, FIFOs, dangling links) holds no items, and opening a
            # FIFO would block the planner.
        except OSError as exc:
            # A path over PATH_MAX, say, or one that went away mid-walk.
            raise Invalid(
                f"{shown_path(entry.path)} cannot be read: {exc.strerror}", field
            ) from exc


def _entries(directory: str, field: str, name_prefix: str = "") -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as scan:
            chosen = (entry for entry in scan if entry.name.startswith(name_prefix))
            return iter(sorted(chosen, key=lambda entry: entry.name))
    except OSError as exc:
        raise Invalid(f"{shown_path(directory)} cannot be listed: {exc.strerror}", field) from exc


def _under_roots(path: str, roots: list[str]) -> bool:
    real = os.path.realpath(path)
    return any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def shown_path(path: str) -> str:
    """A path as text for messages and listings: a name that is not UTF-8 (os.scandir
    gives its bytes as lone surrogates) shows those bytes as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def read_items(path: str, max_item_bytes: int, s3: S3Objects) -> Iterator[bytes]:
    """The items of a delimited file or S3 object, a line at a time: no line is read past
    LINE_BYTES_PER_ITEM_BYTE times the item limit, however long it is."""
    if is_s3_url(path):
        with s3.open(path, "delimited_files") as lines:
            yield from _read_lines(lines, path, max_item_bytes)
        return
    try:
        with open(path, "rb") as lines:
            yield from _read_lines(lines, path, max_item_bytes)
    except OSError as exc:
        raise Invalid(f"cannot read {shown_path(path)}: {exc.strerror}", "delimited_files") from exc


def _read_lines(lines: BinaryIO, path: str, max_item_bytes: int) -> Iterator[bytes]:
    longest = LINE_BYTES_PER_ITEM_BYTE * max_item_bytes
    number = 0
    while line := lines.readline(longest + 1):
        number += 1
        if len(line) > longest and not line.endswith(b"\n"):
            raise Invalid(
                f"{shown_path(path)}:{number}: line {number} is longer than "
                f"{longest} bytes, so its item cannot fit in {max_item_bytes} bytes "
                f"as JSON (max_item_size; a line may be {LINE_BYTES_PER_ITEM_BYTE} "
                "times that as written); it was not read further",
                "delimited_files",
            )
        if line.strip():
            yield _encode_line(line, f"{shown_path(path)}:{number}", max_item_bytes)


def _encode_line(line: bytes, where: str, max_item_bytes: int) -> bytes:
    try:
        encoded = ENCODER.encode(loads(line.decode("utf-8"))).encode()
    except RecursionError as exc:
        raise Invalid(f"{where}: JSON is nested too deeply", "delimited_files") from exc
    except ValueError as exc:
        raise Invalid(f"{where}: not valid JSON: {exc}", "delimited_files") from exc
    if len(encoded) > max_item_bytes:
        raise Invalid(
            f"{where}: item is {len(encoded)} bytes as JSON, "
            f"over the limit of {max_item_bytes} bytes",
            "delimited_files",
        )
    return encoded
