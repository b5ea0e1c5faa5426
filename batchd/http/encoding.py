"""Request bodies sent with a Content-Encoding, decoded as a stream that stops at a cap.

aiohttp would decode them itself, in pieces as large as the body cap and on to the end of
the upload after a 413: a few megabytes of gzip holding gigabytes of zeros kept a CPU busy
for seconds. The daemon turns that off (``auto_decompress=False``) and decodes here, in
small steps, so a compression bomb costs no more than ``max_request_size`` of output.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

from batchd.errors import BadRequest
from batchd.http.errors import HttpError

FIELD = "Content-Encoding"
IDENTITY = "identity"
GZIP_CODINGS = frozenset({"gzip", "x-gzip"})
DEFLATE = "deflate"
SUPPORTED = frozenset({IDENTITY, DEFLATE, *GZIP_CODINGS})
# Decoded output per step: one step is well under a millisecond of CPU.
DECODE_STEP_BYTES = 1 << 20
# zlib's window bits: a gzip member, a zlib stream, or raw deflate (what some clients send
# as "deflate").
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_ZLIB_WBITS = zlib.MAX_WBITS
_RAW_WBITS = -zlib.MAX_WBITS
# A zlib stream's first byte names its method in the low 4 bits: 8 is deflate.
_ZLIB_METHOD_MASK = 0x0F
_ZLIB_DEFLATE_METHOD = 8


def content_coding(header: str | None) -> str:
    """The one coding a body was sent with; 415 for any this daemon cannot decode."""
    codings = [c.strip().lower() for c in (header or "").split(",")]
    applied = [c for c in codings if c and c != IDENTITY]
    if not applied:
        return IDENTITY
    if len(applied) > 1 or applied[0] not in SUPPORTED:
        offered = ", ".join(sorted(SUPPORTED))
        raise HttpError(
            415, f"unsupported Content-Encoding {header!r}; send one of {offered}", field=FIELD
        )
    return applied[0]


class BodyDecoder:
    """Feed it the body as it arrives; it yields decoded pieces of at most one step."""

    def __init__(self, coding: str) -> None:
        self._gzip = coding in GZIP_CODINGS
        self._inflater: zlib._Decompress | None = None

    def feed(self, data: bytes) -> Iterator[bytes]:
        while data:
            inflater = self._inflater
            if inflater is None or inflater.eof:
                if inflater is not None and not self._gzip:
                    raise BadRequest("data after the end of the deflate body", FIELD)
                # gzip bodies may hold several members, one after another (RFC 1952).
                inflater = self._inflater = zlib.decompressobj(self._wbits(data))
            try:
                piece = inflater.decompress(data, DECODE_STEP_BYTES)
                # A full step may leave output inside zlib with all input taken.
                while len(piece) == DECODE_STEP_BYTES:
                    yield piece
                    piece = inflater.decompress(inflater.unconsumed_tail, DECODE_STEP_BYTES)
            except zlib.error as exc:
                raise BadRequest(f"the body is not valid {self._name}: {exc}", FIELD) from None
            if piece:
                yield piece
            data = inflater.unused_data if inflater.eof else inflater.unconsumed_tail

    def finish(self) -> None:
        if self._inflater is not None and not self._inflater.eof:
            raise BadRequest(f"the {self._name} body ends before its end", FIELD)

    @property
    def _name(self) -> str:
        return "gzip" if self._gzip else DEFLATE

    def _wbits(self, first: bytes) -> int:
        if self._gzip:
            return _GZIP_WBITS
        if first[0] & _ZLIB_METHOD_MASK == _ZLIB_DEFLATE_METHOD:
            return _ZLIB_WBITS
        return _RAW_WBITS
