"""Framing for the daemon <-> worker channel (standard library only).

One Unix socketpair per worker, inherited as a file descriptor. Each message is a
4-byte big-endian length followed by a UTF-8 JSON object with an ``op`` key; the
messages themselves are batchd.wire.messages' records.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

from batchd.constants import FRAME_HEADER_BYTES, MAX_FRAME_BYTES

_HEADER = struct.Struct(">I")


class ChannelClosed(Exception):
    """The other end went away."""


class BadFrame(ValueError):
    """A frame the reader cannot take: over MAX_FRAME_BYTES, not JSON, not an object.
    The sender broke the protocol; on the daemon's side, that is the worker's doing."""


def frame(body: bytes) -> bytes:
    return _HEADER.pack(len(body)) + body


def encode(message: dict[str, Any]) -> bytes:
    return frame(json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode())


def frame_length(header: bytes) -> int:
    (length,) = _HEADER.unpack(header)
    if length > MAX_FRAME_BYTES:
        raise BadFrame(f"a frame of {length} bytes, over the {MAX_FRAME_BYTES}-byte frame limit")
    return int(length)


def decode(body: bytes) -> dict[str, Any]:
    """A frame's message; BadFrame when it is not a JSON object."""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadFrame(f"a frame that is not valid JSON ({exc})") from None
    if not isinstance(message, dict):
        raise BadFrame("a frame that is not a JSON object")
    return message


class BlockingChannel:
    """The worker's end: plain blocking socket I/O."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def send(self, message: dict[str, Any]) -> None:
        self._sock.sendall(encode(message))

    def send_frame(self, data: bytes) -> None:
        """Send a frame as a record of batchd.wire.messages encodes it."""
        self._sock.sendall(data)

    def recv(self) -> dict[str, Any]:
        length = frame_length(self._read_exactly(FRAME_HEADER_BYTES))
        return decode(self._read_exactly(length))

    def _read_exactly(self, count: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < count:
            chunk = self._sock.recv(count - len(chunks))
            if not chunk:
                raise ChannelClosed
            chunks += chunk
        return bytes(chunks)
