"""Decoding request bodies sent with a Content-Encoding (batchd.http.encoding)."""

from __future__ import annotations

import gzip
import zlib

import pytest

from batchd.errors import DomainError
from batchd.http.encoding import DECODE_STEP_BYTES, BodyDecoder, content_coding
from batchd.http.errors import HttpError, status_of

DATA = b"".join(str(i).encode() for i in range(100_000))


def decode(coding: str, body: bytes, chunk: int = 7) -> bytes:
    decoder = BodyDecoder(coding)
    pieces = [p for i in range(0, len(body), chunk) for p in decoder.feed(body[i : i + chunk])]
    decoder.finish()
    assert all(len(p) <= DECODE_STEP_BYTES for p in pieces)
    return b"".join(pieces)


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(
    ("coding", "body"),
    [
        ("gzip", gzip.compress(DATA)),
        ("x-gzip", gzip.compress(DATA[:10]) + gzip.compress(DATA[10:])),
        ("deflate", zlib.compress(DATA)),
        ("deflate", raw_deflate(DATA)),
    ],
    ids=["gzip", "two-gzip-members", "zlib-deflate", "raw-deflate"],
)
def test_decodes_in_any_chunking(coding: str, body: bytes) -> None:
    assert decode(coding, body) == DATA
    assert decode(coding, body, chunk=len(body)) == DATA


def test_output_comes_in_steps_however_large_the_input_expands() -> None:
    zeros = gzip.compress(bytes(10 * DECODE_STEP_BYTES))
    pieces = list(BodyDecoder("gzip").feed(zeros))
    assert [len(p) for p in pieces] == [DECODE_STEP_BYTES] * 10


@pytest.mark.parametrize(
    ("coding", "body", "problem"),
    [
        ("gzip", gzip.compress(DATA)[:-20], "ends before its end"),
        ("gzip", b"not gzip at all", "not valid gzip"),
        ("gzip", gzip.compress(DATA) + b"trailing", "not valid gzip"),
        ("deflate", zlib.compress(DATA) + b"more", "data after the end"),
    ],
    ids=["truncated", "not-gzip", "trailing-garbage", "data-after-deflate"],
)
def test_broken_bodies_are_400_naming_the_header(coding: str, body: bytes, problem: str) -> None:
    with pytest.raises(DomainError) as refused:
        decode(coding, body)
    assert status_of(refused.value) == 400
    assert refused.value.field == "Content-Encoding"
    assert problem in refused.value.message


@pytest.mark.parametrize(
    ("header", "coding"),
    [(None, "identity"), ("", "identity"), ("Identity", "identity"), (" GZip ", "gzip")],
)
def test_content_coding(header: str | None, coding: str) -> None:
    assert content_coding(header) == coding


@pytest.mark.parametrize("header", ["br", "zstd", "gzip, deflate", "compress"])
def test_other_codings_are_415(header: str) -> None:
    with pytest.raises(HttpError) as refused:
        content_coding(header)
    assert refused.value.status == 415
    assert refused.value.field == "Content-Encoding"
