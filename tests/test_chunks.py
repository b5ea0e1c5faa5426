"""A chunk is cut into its batches' payloads without decoding them, byte for byte as the
batches were encoded, whatever the payloads hold."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchd.admission.json_text import ENCODER
from batchd.store.chunks import ChunkWriter, split_chunk


def encoded(value: Any) -> bytes:
    return ENCODER.encode(value).encode()


def chunk_of(batches: list[list[Any]]) -> bytes:
    written: list[bytes] = []
    writer = ChunkWriter(lambda chunk: written.append(chunk.payloads))
    for batch in batches:
        writer.add(encoded(batch))
    writer.finish([])
    (chunk,) = written
    return chunk


@pytest.mark.parametrize(
    "batches",
    [
        [],
        [[]],
        [[1], [2.5, -3e-07], [None, True, False]],
        [[[1, [2, [3]]], []], [[[]]], [{"a": [1, 2]}, {"b": {"c": [[]]}}]],
        [["]", "[", "],[", '"'], ['\\"]', "\\"], [{"k]": "v["}]],
        [["日本語", "🎉"], ["\u0000 and \n"], [{"é": ["[x]"]}]],
    ],
    ids=["empty", "one-empty-batch", "numbers", "nested", "brackets-in-strings", "unicode"],
)
def test_payloads_come_out_as_they_were_encoded(batches: list[list[Any]]) -> None:
    chunk = chunk_of(batches) if batches else b"[]"
    assert split_chunk(chunk) == [encoded(batch) for batch in batches]


@pytest.mark.parametrize(
    ("chunk", "expected"),
    [
        # Not written by batchd, but still JSON: decoded and encoded compact.
        (b"[ [1, 2] , [3] ]", [b"[1,2]", b"[3]"]),
        (b'[["a" ,"b"], ["c"]]', [b'["a","b"]', b'["c"]']),
        # A top-level value that is not a batch array is not dropped.
        (b"[[1],2]", [b"[1]", b"2"]),
        (b'[[1],"x"]', [b"[1]", b'"x"']),
    ],
)
def test_a_chunk_in_another_shape_is_decoded(chunk: bytes, expected: list[bytes]) -> None:
    assert split_chunk(chunk) == expected


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(JSON_VALUES, max_size=5), max_size=8))
def test_any_batches_round_trip(batches: list[list[Any]]) -> None:
    chunk = chunk_of(batches) if batches else b"[]"
    payloads = split_chunk(chunk)
    assert payloads == [encoded(batch) for batch in batches]
    assert [json.loads(payload) for payload in payloads] == json.loads(chunk)
