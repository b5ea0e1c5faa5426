"""The body of ``POST /batch/<api>``: validation, and turning it into batch payloads.

Every client mistake becomes an :class:`ApiError` whose ``field`` points at the offending
part of the request, because that is what users see.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from batchd.admission.globs import compile_glob, path_selected
from batchd.constants import CHUNK_BATCHES, CHUNK_MAX_BYTES
from batchd.errors import ApiError, bad_request, forbidden, invalid, too_large
from batchd.store.chunks import BatchChunks, Chunk, ChunkSpool, ChunkWriter

DEFAULT_MAX_RECEIVE_COUNT = 3
DEFAULT_MAX_JSON_DEPTH = 64
# The config's defaults (max_batch_size, max_batches_per_job), for callers without one.
DEFAULT_MAX_BATCH_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_BATCHES = 10_000_000
# A delimited line is read up to this many times max_item_size and no further: as
# written it may be longer than its item re-encoded (a \u00e9 escape is 6 bytes for 2),
# but a longer line cannot be worth reading whole (a 1 GiB line would be held in memory).
LINE_BYTES_PER_ITEM_BYTE = 6

SourceKind = Literal["item_list", "delimited_files", "file_path_lister"]
SOURCE_KINDS: tuple[SourceKind, ...] = ("item_list", "delimited_files", "file_path_lister")

# Counts and priorities end up in SQLite INTEGER columns, which hold signed 64 bits.
_INT64_MAX = 2**63 - 1
_Count = Annotated[int, Field(ge=1, le=_INT64_MAX)]

# Items are re-encoded exactly like this everywhere, so sizes and payloads agree.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)

# Error `ctx` key naming where, below the error's own location, the problem is.
_AT = "at"


def _check_glob(pattern: str) -> str:
    try:
        compile_glob(pattern)
    except ValueError as exc:
        raise PydanticCustomError("glob", "{reason}", {"reason": str(exc)}) from exc
    return pattern


_Glob = Annotated[str, AfterValidator(_check_glob)]


class _Strict(BaseModel):
    # strict: JSON `true` is no integer and `"2"` no number.
    model_config = ConfigDict(strict=True, extra="forbid")


class ItemList(_Strict):
    items: list[Any] = Field(min_length=1)
    batch_size: _Count


def _describe_s3_paths(schema: dict[str, Any]) -> None:
    """The published schema: ``s3_paths`` is accepted in place of ``paths``."""
    properties = schema["properties"]
    properties["s3_paths"] = {
        **properties["paths"],
        "title": "S3 Paths",
        "description": "Cortex's name for paths",
    }
    schema["required"] = [name for name in schema["required"] if name != "paths"]
    schema["oneOf"] = [{"required": ["paths"]}, {"required": ["s3_paths"]}]


class FileSource(_Strict):
    """``delimited_files`` and ``file_path_lister``; Cortex's ``s3_paths`` means ``paths``."""

    model_config = ConfigDict(json_schema_extra=_describe_s3_paths)

    paths: list[str] = Field(min_length=1)
    includes: list[_Glob] = []
    excludes: list[_Glob] = []
    batch_size: _Count

    @model_validator(mode="before")
    @classmethod
    def _accept_s3_paths(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "s3_paths" not in data:
            return data
        if "paths" in data:
            raise _error("give either paths or s3_paths, not both", at="s3_paths")
        renamed = dict(data)
        renamed["paths"] = renamed.pop("s3_paths")
        return renamed


class DeadLetterQueue(_Strict):
    """Cortex's ``sqs_dead_letter_queue``; only ``max_receive_count`` means anything here."""

    arn: str | None = None
    max_receive_count: _Count


class JobSubmission(_Strict):
    # The published schema says what `_exactly_one_source` checks (null means not given).
    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {"required": [kind], "properties": {kind: {"type": "object"}}}
                for kind in SOURCE_KINDS
            ]
        }
    )

    workers: _Count = 1
    item_list: ItemList | None = None
    delimited_files: FileSource | None = None
    file_path_lister: FileSource | None = None
    config: dict[str, Any] = {}
    timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    # Seconds one handle_batch call may take before its worker is killed.
    batch_timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    # Resolved after validation: the `sqs_dead_letter_queue` form fills it in when given.
    max_receive_count: _Count = DEFAULT_MAX_RECEIVE_COUNT
    sqs_dead_letter_queue: DeadLetterQueue | None = None
    priority: int = Field(default=0, ge=-_INT64_MAX - 1, le=_INT64_MAX)

    @model_validator(mode="after")
    def _exactly_one_source(self) -> JobSubmission:
        given = [kind for kind in SOURCE_KINDS if getattr(self, kind) is not None]
        options = ", ".join(SOURCE_KINDS)
        if not given:
            raise _error(f"the job needs a source: exactly one of {options}", at="item_list")
        if len(given) > 1:
            raise _error(f"give exactly one of {options}, not {' and '.join(given)}", at=given[1])
        return self

    @model_validator(mode="after")
    def _resolve_max_receive_count(self) -> JobSubmission:
        queue = self.sqs_dead_letter_queue
        if queue is None:
            return self
        if "max_receive_count" not in self.model_fields_set:
            self.max_receive_count = queue.max_receive_count
        elif self.max_receive_count != queue.max_receive_count:
            raise _error(
                f"max_receive_count is {self.max_receive_count} but "
                f"sqs_dead_letter_queue.max_receive_count is {queue.max_receive_count}",
                at="max_receive_count",
            )
        return self

    @property
    def source_kind(self) -> SourceKind:
        return next(kind for kind in SOURCE_KINDS if getattr(self, kind) is not None)

    @property
    def source(self) -> ItemList | FileSource:
        source: ItemList | FileSource = getattr(self, self.source_kind)
        return source

    def max_receive_count_value(self) -> int:
        return self.max_receive_count


def parse_submission(body: bytes, max_depth: int = DEFAULT_MAX_JSON_DEPTH) -> JobSubmission:
    try:
        # Strictly, unlike json.loads(bytes): surrogates encoded in the bytes are refused.
        text = body.decode(json.detect_encoding(body))
        data = _loads(text)
    except RecursionError as exc:
        raise bad_request("request body is nested too deeply") from exc
    except ValueError as exc:
        raise bad_request(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise bad_request(f"request body must be a JSON object, not {_json_type(data)}")
    if nested_deeper_than(data, max_depth):
        raise bad_request(f"request body is nested deeper than {max_depth} levels (max_json_depth)")
    # Only a \uXXXX escape can make one now; most bodies have none and skip the walk.
    if _SURROGATE_ESCAPE.search(text):
        where = lone_surrogate_at(data)
        if where is not None:
            raise bad_request(
                f"request body is not valid JSON: {where or 'it'} holds an unpaired UTF-16 "
                "surrogate escape (\\ud800-\\udfff), which no UTF-8 text can hold",
                where or None,
            )
    try:
        return JobSubmission.model_validate(data)
    except ValidationError as exc:
        raise _api_error(exc) from exc


def nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether objects/arrays nest more than `limit` levels (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if depth > limit:
            return True
        # A long list of scalars (a million items) is told apart in C, not walked.
        if isinstance(node, list) and not _CONTAINERS & set(map(type, node)):
            continue
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


_CONTAINERS: frozenset[type] = frozenset({dict, list})
_NUMBERS: frozenset[type] = frozenset({int, float, bool, type(None)})
# The longest JSON text of a number Python parses: 4,300 digits (sys.int_info), and a sign.
_LONGEST_NUMBER = 4301


def _items_within(items: list[Any], max_item_bytes: int) -> bool:
    """Whether every item surely fits in `max_item_bytes` as JSON, judged without encoding
    them one by one: numbers are short, and a string of n characters takes at most 6n + 2
    bytes (a \\u escape per character)."""
    kinds = set(map(type, items))
    if kinds <= _NUMBERS:
        return max_item_bytes >= _LONGEST_NUMBER
    if kinds <= _NUMBERS | {str}:
        longest = max(map(len, (item for item in items if type(item) is str)), default=0)
        return max_item_bytes >= max(_LONGEST_NUMBER, 6 * longest + 2)
    return False


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogate_at(value: Any) -> str | None:
    """The path (``config.key``, ``item_list.items[3]``) of a string, key or value,
    holding an unpaired surrogate, which cannot be stored or sent on as UTF-8; ``""`` for the
    value itself, None when there is none. Iterative, like :func:`nested_deeper_than`."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            if _SURROGATE.search(node):
                return path
        elif isinstance(node, dict):
            for key, child in node.items():
                # The key itself goes into the path escaped: the path is sent back as text.
                name = key.encode("utf-8", "backslashreplace").decode()
                child_path = f"{path}.{name}" if path else name
                if _SURROGATE.search(key):
                    return child_path
                stack.append((child, child_path))
        elif isinstance(node, list):
            stack.extend((child, f"{path}[{index}]") for index, child in enumerate(node))
    return None


@dataclass(frozen=True)
class BatchPlan:
    kind: str
    batches: BatchChunks
    matched_files: list[str] | None
    item_count: int

    @property
    def payloads(self) -> list[bytes]:
        return self.batches.payloads()

    def close(self) -> None:
        """Let go of the spooled chunks (the plan is stored, or refused)."""
        self.batches.close()


def plan_batches(
    sub: JobSubmission,
    input_roots: Sequence[Path],
    max_item_bytes: int,
    *,
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    max_batches: int = DEFAULT_MAX_BATCHES,
    spool_dir: Path | None = None,
    keep_payloads: bool = True,
) -> BatchPlan:
    """Build every batch payload up front; blocking, so the daemon runs it in a thread.

    File sources are read a line at a time, and their chunks go to a spool file in
    `spool_dir` as they fill (kept in memory when it is None): memory holds a chunk and
    a batch, never the input. keep_payloads=False (a dry run) checks and keeps nothing.
    The caller closes the plan."""
    source = sub.source
    kind = sub.source_kind
    if isinstance(source, ItemList):
        count = -(-len(source.items) // source.batch_size)
        if count > max_batches:
            raise _too_many_batches(str(count), max_batches, kind)
        chunks = _item_list_chunks(source.items, source.batch_size, max_item_bytes, max_batch_bytes)
        return BatchPlan(kind, chunks, None, len(source.items))
    files = _select_files(source, kind, input_roots)
    sink: list[Chunk] | ChunkSpool = (
        ChunkSpool(spool_dir) if keep_payloads and spool_dir is not None else []
    )
    try:
        writer = ChunkWriter(sink.append if keep_payloads else _discard)
        batcher = _Batcher(writer, source.batch_size, max_batch_bytes, max_batches, kind)
        for path in files:
            if kind == "delimited_files":
                for item in _read_items(path, max_item_bytes):
                    batcher.add(item)
            else:
                batcher.add(_ENCODER.encode(path).encode())
        batcher.finish()
        if not batcher.items:
            raise invalid(
                f"job has no batches: the {len(files)} selected files hold no items", kind
            )
        shown = [shown_path(path) for path in files]
        return BatchPlan(kind, writer.finish(sink), shown, batcher.items)
    except BaseException:
        if isinstance(sink, ChunkSpool):
            sink.close()
        raise


def shown_path(path: str) -> str:
    """A path as text for messages and listings: a name that is not UTF-8 (os.scandir
    gives its bytes as lone surrogates) shows those bytes as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _discard(chunk: Chunk) -> None:
    pass


class _Batcher:
    """Encoded items into batches of `batch_size`, each checked against `max_batch_bytes`
    as it grows (a huge batch is refused before it is held whole), then into `writer`."""

    def __init__(
        self,
        writer: ChunkWriter,
        batch_size: int,
        max_batch_bytes: int,
        max_batches: int,
        kind: str,
    ) -> None:
        self._writer = writer
        self._batch_size = batch_size
        self._max_batch_bytes = max_batch_bytes
        self._max_batches = max_batches
        self._kind = kind
        self._items: list[bytes] = []
        # The batch's size as JSON so far, less its closing bracket.
        self._bytes = 0
        self.items = 0

    def add(self, item: bytes) -> None:
        self._items.append(item)
        self._bytes += len(item) + 1
        self.items += 1
        if self._bytes + 1 > self._max_batch_bytes:
            raise _batch_too_large(self._writer.count + 1, self._max_batch_bytes, self._kind)
        if len(self._items) == self._batch_size:
            self._close_batch()

    def finish(self) -> None:
        if self._items:
            self._close_batch()

    def _close_batch(self) -> None:
        if self._writer.count >= self._max_batches:
            raise _too_many_batches(f"more than {self._max_batches}", self._max_batches, self._kind)
        self._writer.add(b"[" + b",".join(self._items) + b"]")
        self._items = []
        self._bytes = 0


def _too_many_batches(count: str, max_batches: int, kind: str) -> ApiError:
    return too_large(
        f"job has {count} batches, over the {max_batches} limit (max_batches_per_job); "
        "use a larger batch_size",
        f"{kind}.batch_size",
    )


def _batch_too_large(number: int, max_batch_bytes: int, kind: str, size: str = "") -> ApiError:
    return too_large(
        f"batch {number} is {size}over the {max_batch_bytes} byte limit of one batch "
        "(max_batch_size); use a smaller batch_size",
        f"{kind}.batch_size",
    )


# --- parsing -------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _finite_float(text: str) -> float:
    value = float(text)
    # Python reads 1e400 as inf, which no JSON encoder can write back out.
    if math.isinf(value):
        raise ValueError(f"number {text} is out of range")
    return value


def _loads(text: bytes | str) -> Any:
    return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)


def _error(message: str, *, at: str) -> PydanticCustomError:
    return PydanticCustomError("submission", "{message}", {"message": message, _AT: at})


def _api_error(exc: ValidationError) -> ApiError:
    errors = exc.errors(include_url=False)
    first = errors[0]
    field = _field_path(first)
    message = f"{field}: {_describe(first)}" if field else _describe(first)
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problems)"
    return invalid(message, field or None)


def _field_path(error: ErrorDetails) -> str:
    location: list[str | int] = list(error["loc"])
    # Model validators cannot set a location, so they say in `ctx` where the problem is.
    at = error.get("ctx", {}).get(_AT)
    if at is not None:
        location.append(at)
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path


# Pydantic names Python types; users wrote JSON.
_EXPECTED = {
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "list_type": "an array",
    "dict_type": "an object",
    "model_type": "an object",
}


def _describe(error: ErrorDetails) -> str:
    kind = error["type"]
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind in _EXPECTED:
        return f"must be {_EXPECTED[kind]}, not {_json_type(error['input'])}"
    return error["msg"]


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


# --- batching ------------------------------------------------------------------------------


def _item_list_chunks(
    items: list[Any], batch_size: int, max_item_bytes: int, max_batch_bytes: int
) -> BatchChunks:
    # One encoder call per chunk of CHUNK_BATCHES batches, not per batch or item: per-call
    # overhead dominates small items.
    per_chunk = CHUNK_BATCHES * batch_size
    chunks: list[Chunk] = []
    writer = ChunkWriter(chunks.append)
    checked = _items_within(items, max_item_bytes)
    for start in range(0, len(items), per_chunk):
        part = items[start : start + per_chunk]
        batches = [part[first : first + batch_size] for first in range(0, len(part), batch_size)]
        chunk = _ENCODER.encode(batches).encode()
        # No item or batch is larger than its chunk: a small chunk needs no closer look.
        if len(chunk) <= min(CHUNK_MAX_BYTES, max_batch_bytes + 2) and (
            checked or len(chunk) - 4 <= max_item_bytes
        ):
            writer.add_chunk(Chunk(len(batches), chunk))
            continue
        del chunk
        for index, batch in enumerate(batches):
            payload = _ENCODER.encode(batch).encode()
            if not checked and len(payload) - 2 > max_item_bytes:
                _check_item_sizes(items, start + index * batch_size, batch_size, max_item_bytes)
            if len(payload) > max_batch_bytes:
                size = f"{len(payload)} bytes as JSON, "
                raise _batch_too_large(writer.count + 1, max_batch_bytes, "item_list", size)
            writer.add(payload)
    return writer.finish(chunks)


def _check_item_sizes(items: list[Any], start: int, count: int, max_item_bytes: int) -> None:
    for index in range(start, min(start + count, len(items))):
        size = len(_ENCODER.encode(items[index]).encode())
        if size > max_item_bytes:
            raise invalid(
                f"item {index} is {size} bytes as JSON, over the limit of {max_item_bytes} bytes",
                f"item_list.items[{index}]",
            )


def _read_items(path: str, max_item_bytes: int) -> Iterator[bytes]:
    """The items of a delimited file, a line at a time: no line is read past
    LINE_BYTES_PER_ITEM_BYTE times the item limit, however long it is."""
    longest = LINE_BYTES_PER_ITEM_BYTE * max_item_bytes
    try:
        with open(path, "rb") as lines:
            number = 0
            while line := lines.readline(longest + 1):
                number += 1
                if len(line) > longest and not line.endswith(b"\n"):
                    raise invalid(
                        f"{shown_path(path)}:{number}: line {number} is longer than "
                        f"{longest} bytes, so its item cannot fit in {max_item_bytes} bytes "
                        f"as JSON (max_item_size; a line may be {LINE_BYTES_PER_ITEM_BYTE} "
                        "times that as written); it was not read further",
                        "delimited_files",
                    )
                if line.strip():
                    yield _encode_line(line, f"{shown_path(path)}:{number}", max_item_bytes)
    except OSError as exc:
        raise invalid(f"cannot read {shown_path(path)}: {exc.strerror}", "delimited_files") from exc


def _encode_line(line: bytes, where: str, max_item_bytes: int) -> bytes:
    try:
        encoded = _ENCODER.encode(_loads(line.decode("utf-8"))).encode()
    except RecursionError as exc:
        raise invalid(f"{where}: JSON is nested too deeply", "delimited_files") from exc
    except ValueError as exc:
        raise invalid(f"{where}: not valid JSON: {exc}", "delimited_files") from exc
    if len(encoded) > max_item_bytes:
        raise invalid(
            f"{where}: item is {len(encoded)} bytes as JSON, "
            f"over the limit of {max_item_bytes} bytes",
            "delimited_files",
        )
    return encoded


# --- listing files -------------------------------------------------------------------------


def _select_files(source: FileSource, kind: str, input_roots: Sequence[Path]) -> list[str]:
    if not input_roots:
        raise forbidden(
            f"{kind} is disabled: reading local files needs `input_roots` in the daemon config",
            f"{kind}.paths",
        )
    roots = [os.path.realpath(root) for root in input_roots]
    includes = [compile_glob(pattern) for pattern in source.includes]
    excludes = [compile_glob(pattern) for pattern in source.excludes]
    selected: set[str] = set()
    for index, given in enumerate(source.paths):
        field = f"{kind}.paths[{index}]"
        for path in _list_path(given, roots, field):
            if path_selected(path, includes, excludes):
                if kind == "file_path_lister":
                    _require_utf8_name(path, field)
                selected.add(path)
    if not selected:
        raise invalid(
            f"job has no batches: no files under {kind}.paths match the includes and excludes",
            f"{kind}.paths",
        )
    return sorted(selected)


def _require_utf8_name(path: str, field: str) -> None:
    """file_path_lister hands each path to the handler as JSON text, which holds UTF-8 only:
    a name in another encoding is refused rather than sent changed or left out unsaid."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid(
            f"{shown_path(path)} is not a UTF-8 path (its bytes are shown as \\xNN "
            "escapes): file_path_lister sends paths to the handler as JSON text, which "
            "cannot hold it; rename the file or leave it out with excludes",
            field,
        ) from None


def _list_path(given: str, roots: list[str], field: str) -> list[str]:
    """The files ``given`` names, refusing anything that resolves outside every root."""
    # realpath() cannot take a NUL, and no file name holds one.
    if "\0" in given:
        raise forbidden(f"{given!r} is not an allowed path", field)
    # A relative path would depend on the daemon's working directory.
    if not os.path.isabs(given):
        raise invalid(f"{given!r} is not an absolute path", field)
    if not _under_roots(given, roots):
        raise forbidden(f"{given!r} is outside the daemon's input_roots", field)
    try:
        mode = os.stat(given).st_mode
    except OSError as exc:
        raise invalid(f"{given!r} cannot be read: {exc.strerror}", field) from exc
    if stat.S_ISREG(mode):
        return [given]
    if stat.S_ISDIR(mode):
        return list(_walk(given, roots, field))
    raise invalid(f"{given!r} is neither a regular file nor a directory", field)


def _walk(top: str, roots: list[str], field: str) -> Iterator[str]:
    """Regular files below ``top``, in sorted order, following symlinks within roots.

    Iterative, with each directory's real path built from its parent's (only a symlink
    is resolved): neither the depth of a tree nor its length of paths makes it costly."""
    real = os.path.realpath(top)
    # The directories being listed, outermost first, and their real paths.
    stack = [(_entries(top, field), real)]
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
                raise forbidden(
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
            raise invalid(
                f"{shown_path(entry.path)} cannot be read: {exc.strerror}", field
            ) from exc


def _entries(directory: str, field: str) -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as scan:
            return iter(sorted(scan, key=lambda entry: entry.name))
    except OSError as exc:
        raise invalid(f"{shown_path(directory)} cannot be listed: {exc.strerror}", field) from exc


def _under_roots(path: str, roots: list[str]) -> bool:
    real = os.path.realpath(path)
    return any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in roots)
