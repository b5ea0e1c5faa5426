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
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from batchd.constants import CHUNK_BATCHES, CHUNK_MAX_BYTES
from batchd.store.records import encode_payload

_BRACKET = re.compile(rb"[\[\]]")
_DECODER = json.JSONDecoder()
_OPEN_BRACKET = ord("[")


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
        return [payload for chunk in self.chunks for payload in split_chunk(chunk.payloads)]

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


def split_chunk(chunk: bytes) -> list[bytes]:
    """The batch payloads a chunk holds, each as the bytes it was stored as.

    Leasing cuts a chunk into its batches without decoding them: decoding and encoding
    every value again cost the daemon more CPU than anything else for a job of numbers
    (1.2 s per 18 MB of floats). Every batch is a JSON array and chunks are written compact,
    so with no string in the chunk its batches are the spans between brackets at depth 2;
    with strings (which may hold brackets) the decoder finds where each batch ends. A
    chunk in any other shape is decoded and encoded as before."""
    if chunk.startswith(b"[[") or chunk == b"[]":
        try:
            if b'"' not in chunk:
                payloads = _split_by_brackets(chunk)
            else:
                payloads = _split_by_scanning(chunk.decode())
        except (ValueError, IndexError):
            payloads = []
        # Only a chunk that is exactly "[" + ",".join(payloads) + "]" was cut right.
        if sum(map(len, payloads)) + max(len(payloads) - 1, 0) + 2 == len(chunk):
            return payloads
    return [encode_payload(value) for value in json.loads(chunk)]


def _split_by_brackets(chunk: bytes) -> list[bytes]:
    payloads: list[bytes] = []
    depth = 0
    start = 0
    for bracket in _BRACKET.finditer(chunk):
        if chunk[bracket.start()] == _OPEN_BRACKET:
            depth += 1
            if depth == 2:
                start = bracket.start()
        else:
            if depth == 2:
                payloads.append(chunk[start : bracket.end()])
            depth -= 1
    return payloads


def _split_by_scanning(text: str) -> list[bytes]:
    payloads: list[bytes] = []
    index = 1
    while text[index] != "]":
        _, end = _DECODER.raw_decode(text, index)
        payloads.append(text[index:end].encode())
        if text[end] == ",":
            end += 1
        elif text[end] != "]":
            raise ValueError("a chunk not written compact")
        index = end
    return payloads
