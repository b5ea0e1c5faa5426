"""Planning a job's batches: a parsed body becomes every batch payload, in chunks.

Blocking CPU and file work, which the service runs in a thread. A plan holds a chunk and a
batch in memory, never the whole input: file sources spool their chunks to disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchd.admission.input_files import read_items, select_files, shown_path
from batchd.admission.job_body import ItemList, JobSubmission
from batchd.admission.json_text import ENCODER
from batchd.admission.s3_files import S3Objects
from batchd.config import S3Config
from batchd.constants import CHUNK_BATCHES, CHUNK_MAX_BYTES
from batchd.errors import Invalid, TooLarge
from batchd.store.chunks import BatchChunks, Chunk, ChunkSpool, ChunkWriter

# The config's defaults (max_batch_size, max_batches_per_job), for callers without one.
DEFAULT_MAX_BATCH_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_BATCHES = 10_000_000


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
    s3: S3Config | None = None,
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
    # Connects on the first s3:// path, with the daemon's [s3] settings.
    objects = S3Objects(s3 or S3Config())
    files = select_files(source, kind, input_roots, objects)
    sink: list[Chunk] | ChunkSpool = (
        ChunkSpool(spool_dir) if keep_payloads and spool_dir is not None else []
    )
    try:
        writer = ChunkWriter(sink.append if keep_payloads else _discard)
        batcher = _Batcher(writer, source.batch_size, max_batch_bytes, max_batches, kind)
        for path in files:
            if kind == "delimited_files":
                for item in read_items(path, max_item_bytes, objects):
                    batcher.add(item)
            else:
                batcher.add(ENCODER.encode(path).encode())
        batcher.finish()
        if not batcher.items:
            raise Invalid(
                f"job has no batches: the {len(files)} selected files hold no items", kind
            )
        shown = [shown_path(path) for path in files]
        return BatchPlan(kind, writer.finish(sink), shown, batcher.items)
    except BaseException:
        if isinstance(sink, ChunkSpool):
            sink.close()
        raise


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


def _too_many_batches(count: str, max_batches: int, kind: str) -> TooLarge:
    return TooLarge(
        f"job has {count} batches, over the {max_batches} limit (max_batches_per_job); "
        "use a larger batch_size",
        f"{kind}.batch_size",
    )


def _batch_too_large(number: int, max_batch_bytes: int, kind: str, size: str = "") -> TooLarge:
    return TooLarge(
        f"batch {number} is {size}over the {max_batch_bytes} byte limit of one batch "
        "(max_batch_size); use a smaller batch_size",
        f"{kind}.batch_size",
    )


# Below this many batches a call, encoding a chunk at once saves little.
_FEW_BATCHES = 16


def _item_list_chunks(
    items: list[Any], batch_size: int, max_item_bytes: int, max_batch_bytes: int
) -> BatchChunks:
    chunks: list[Chunk] = []
    writer = ChunkWriter(chunks.append)
    checked = _items_within(items, max_item_bytes)
    # A chunk is kept as encoded only when it is small enough to need no closer look.
    whole = min(CHUNK_MAX_BYTES, max_batch_bytes + 2)
    if not checked:
        whole = min(whole, max_item_bytes + 4)
    per_chunk = _batches_per_chunk(items[:batch_size], whole)
    step = per_chunk * batch_size
    for start in range(0, len(items), step):
        part = items[start : start + step]
        batches = [part[first : first + batch_size] for first in range(0, len(part), batch_size)]
        if per_chunk > 1:
            chunk = ENCODER.encode(batches).encode()
            if len(chunk) <= whole:
                writer.add_chunk(Chunk(len(batches), chunk))
                continue
            del chunk
        for index, batch in enumerate(batches):
            payload = ENCODER.encode(batch).encode()
            if not checked and len(payload) - 2 > max_item_bytes:
                _check_item_sizes(items, start + index * batch_size, batch_size, max_item_bytes)
            if len(payload) > max_batch_bytes:
                size = f"{len(payload)} bytes as JSON, "
                raise _batch_too_large(writer.count + 1, max_batch_bytes, "item_list", size)
            writer.add(payload)
    return writer.finish(chunks)


def _batches_per_chunk(first_batch: list[Any], whole: int) -> int:
    """How many batches to encode in one call, judged by the first batch: as many as make
    half of `whole`, up to CHUNK_BATCHES; 1 (each batch on its own) when that is only a few.

    One call per chunk saves the per-call overhead that dominates small batches, but a chunk
    that comes out past `whole` is encoded again batch by batch. Batches too large for many
    to fit (a model's feature vectors) go one by one from the start, encoded once, and the
    writer still groups them into chunks of up to CHUNK_MAX_BYTES."""
    size = len(ENCODER.encode(first_batch).encode())
    fit = min(CHUNK_BATCHES, whole // (2 * size))
    return fit if fit >= _FEW_BATCHES else 1


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


def _check_item_sizes(items: list[Any], start: int, count: int, max_item_bytes: int) -> None:
    for index in range(start, min(start + count, len(items))):
        size = len(ENCODER.encode(items[index]).encode())
        if size > max_item_bytes:
            raise Invalid(
                f"item {index} is {size} bytes as JSON, over the limit of {max_item_bytes} bytes",
                f"item_list.items[{index}]",
            )
