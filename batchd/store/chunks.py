"""A job's batch payloads as admitted: chunks bounded by count and by bytes.

A chunk is a JSON array of batch payloads: at most CHUNK_BATCHES of them and about
CHUNK_MAX_BYTES in all (a larger batch gets a chunk of its own), so no chunk comes near
SQLite's 1e9-byte limit on a value, whatever the job's size. A large job's chunks go to
an unnamed temporary file as they are made (:class:`ChunkSpool`), and the store reads
them back one at a time in the admission transaction: memory holds one chunk, never the
job.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from batchd.constants import CHUNK_BATCHES, CHUNK_MAX_BYTES

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class Chunk(NamedTuple):
    # How many batch payloads `payloads` holds: the store numbers batches by it.
    batches: int
    payloads: bytes


class ChunkSpool:
    """Chunks written to an unnamed temporary file as they are made, read back in order.

    The file has no name (O_TMPFILE where the file system allows it), so a daemon killed
    mid-admission leaves nothing behind; it lives in `directory` (the state directory),
    on disk rather than in a tmpfs that would hold it in memory."""

    def __init__(self, directory: Path | None) -> None:
        # Closed by close(): the spool outlives this call, up to the end of the admission.
        self._file = tempfile.TemporaryFile(dir=directory, prefix="admission-")  # noqa: SIM115
        self._sizes: list[tuple[int, int]] = []

    def append(self, chunk: Chunk) -> None:
        self._file.write(chunk.payloads)
        self._sizes.append((chunk.batches, len(chunk.payloads)))

    def __len__(self) -> int:
        return len(self._sizes)

    def __iter__(self) -> Iterator[Chunk]:
        self._file.flush()
        self._file.seek(0)
        for batches, length in self._sizes:
            yield Chunk(batches, self._file.read(length))

    def close(self) -> None:
        self._file.close()


@dataclass(frozen=True)
class BatchChunks:
    """A job's `count` batch payloads in chunks (a list, or a spool to close after use)."""

    count: int
    chunks: Sequence[Chunk] | ChunkSpool

    @classmethod
    def of(cls, payloads: Iterable[bytes]) -> BatchChunks:
        """Chunks, in memory, of payloads that are each compact JSON already."""
        chunks: list[Chunk] = []
        writer = ChunkWriter(chunks.append)
        for payload in payloads:
            writer.add(payload)
        return writer.finish(chunks)

    def payloads(self) -> list[bytes]:
        """Every batch's payload on its own (for tests and small jobs)."""
        return [
            _ENCODER.encode(value).encode()
            for chunk in self.chunks
            for value in json.loads(chunk.payloads)
        ]

    def close(self) -> None:
        if isinstance(self.chunks, ChunkSpool):
            self.chunks.close()


class ChunkWriter:
    """Groups batch payloads into chunks, handing each to `emit` as soon as it is full."""

    def __init__(self, emit: Callable[[Chunk], None]) -> None:
        self._emit = emit
        self._parts: list[bytes] = []
        self._bytes = 0
        # Batches written so far, in all chunks.
        self.count = 0

    def add(self, payload: bytes) -> None:
        # One byte per payload for the comma or bracket before it, and one for the last "]".
        if self._parts and self._bytes + len(payload) + 2 > CHUNK_MAX_BYTES:
            self._flush()
        self._parts.append(payload)
        self._bytes += len(payload) + 1
        self.count += 1
        if len(self._parts) == CHUNK_BATCHES:
            self._flush()

    def add_chunk(self, chunk: Chunk) -> None:
        """A chunk made elsewhere (item_list encodes whole chunks at once)."""
        self._flush()
        self._emit(chunk)
        self.count += chunk.batches

    def finish(self, chunks: Sequence[Chunk] | ChunkSpool) -> BatchChunks:
        self._flush()
        return BatchChunks(self.count, chunks)

    def _flush(self) -> None:
        if self._parts:
            self._emit(Chunk(len(self._parts), b"[" + b",".join(self._parts) + b"]"))
            self._parts = []
            self._bytes = 0
