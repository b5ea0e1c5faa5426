"""Bounds on HTTP connections: a header timeout and a cap on how many are open at once.

aiohttp has neither. A client that connects and sends half a request (or nothing) keeps a
socket and a file descriptor until its keep-alive timeout, and a few thousand of them
exhausted the daemon's open-file limit, after which every new connection, ``/healthz``
included, was reset.

- A request's headers must arrive within ``header_timeout`` seconds of the connection
  opening, or of the first bytes of a later request on a kept-alive connection.
- At ``max_connections``, a new connection closes the one that has waited longest for a
  request (half-sent headers or an idle keep-alive); when every connection is busy with a
  request, the new one gets a 503.

This hooks into aiohttp's connection object (:class:`RequestHandler`): the state it reads
(``_request_count``, ``_request_in_progress``, ``_messages``, ``_loop``) is aiohttp's
own, and tests/hostile/test_thousands_of_slow_connections.py fails if that changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger("batchd.http")

# What a connection over the cap gets when no idle one can make room, before it is closed.
_BUSY_BODY = b'{"error": {"message": "too many connections; retry shortly"}}'
BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n"
    b"Content-Length: " + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY
)
# Seconds a refused connection is kept for the client to read its 503 and close, and how
# many may be kept so at once (the rest are closed at once, which may reset them).
REFUSED_LINGER = 1.0
MAX_LINGERING = 64
# The cap being reached is logged at most this often, in seconds.
CAP_WARNING_INTERVAL = 60.0


class ConnectionGuard:
    """The open connections, least recently active first."""

    def __init__(self, limit: int, header_timeout: float) -> None:
        self.limit = limit
        self.header_timeout = header_timeout
        self.closed_idle = 0
        self.refused = 0
        self.lingering = 0
        self._open: OrderedDict[GuardedRequestHandler, None] = OrderedDict()
        self._warned_at: float | None = None

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, handler: GuardedRequestHandler) -> bool:
        if len(self._open) >= self.limit:
            victim = next((h for h in self._open if h.waiting_for_request()), None)
            self._warn(handler.loop_time())
            if victim is None:
                self.refused += 1
                return False
            self.release(victim)
            victim.force_close()
            self.closed_idle += 1
        self._open[handler] = None
        return True

    def touch(self, handler: GuardedRequestHandler) -> None:
        if handler in self._open:
            self._open.move_to_end(handler)

    def release(self, handler: GuardedRequestHandler) -> None:
        self._open.pop(handler, None)

    def _warn(self, now: float) -> None:
        if self._warned_at is not None and now - self._warned_at < CAP_WARNING_INTERVAL:
            return
        self._warned_at = now
        log.warning(
            "connection cap reached: closing the longest-idle connections",
            extra={
                "max_connections": self.limit,
                "closed_idle": self.closed_idle,
                "refused": self.refused,
            },
        )


class GuardedRequestHandler(RequestHandler):
    """aiohttp's connection, with a header timeout and a place under the connection cap."""

    def __init__(self, manager: web.Server, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._admitted = False
        self._header_clock: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._guard.admit(self):
            # uvloop's transports are not asyncio.Transport subclasses, only alike.
            transport = cast(asyncio.Transport, transport)
            # Never started: whatever it sends is not parsed.
            self._force_close = True
            transport.write(BUSY_RESPONSE)
            # Closing a socket with the request still unread resets it, and a reset can
            # destroy the answer before the client reads it: send our end, let the client
            # close (or give up on it soon). Only a few linger, or they would hold the
            # descriptors the cap is there to keep.
            if self._guard.lingering >= MAX_LINGERING or not transport.can_write_eof():
                transport.close()
                return
            transport.write_eof()
            self._guard.lingering += 1
            self._loop.call_later(REFUSED_LINGER, self._end_refused, transport)
            return
        self._admitted = True
        super().connection_made(transport)
        self._start_header_clock()

    def data_received(self, data: bytes) -> None:
        requests_before = self._request_count
        super().data_received(data)
        if self._request_count != requests_before:
            self._stop_header_clock()
            self._guard.touch(self)
        elif data and self._header_clock is None and not self._request_in_progress:
            # The start of a request (on a kept-alive connection, or sent before the last
            # answer was complete): the rest of its headers must follow in time. A body
            # the handler left unread can start the clock too; at worst that closes the
            # connection once idle, header_timeout after it went quiet.
            self._start_header_clock()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_header_clock()
        if not self._admitted:
            return
        self._guard.release(self)
        super().connection_lost(exc)

    def _end_refused(self, transport: asyncio.Transport) -> None:
        self._guard.lingering -= 1
        transport.close()

    def waiting_for_request(self) -> bool:
        """No request being handled or queued: closing it loses nothing acknowledged."""
        return not self._request_in_progress and not self._messages

    def loop_time(self) -> float:
        return self._loop.time()

    def _start_header_clock(self) -> None:
        self._stop_header_clock()
        self._header_clock = self._loop.call_later(
            self._guard.header_timeout, self._headers_late, self._request_count
        )

    def _stop_header_clock(self) -> None:
        if self._header_clock is not None:
            self._header_clock.cancel()
            self._header_clock = None

    def _headers_late(self, requests_then: int) -> None:
        self._header_clock = None
        if self._request_count == requests_then and self.waiting_for_request():
            log.debug("closing a connection whose request headers did not arrive in time")
            self.force_close()


class GuardedServer(web.Server):
    """aiohttp's server, making guarded connections."""

    def __init__(self, guard: ConnectionGuard, plain: web.Server, **options: Any) -> None:
        super().__init__(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            **options,
        )
        self._guard = guard
        self._options = options

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(self, self._guard, **self._options)


class GuardedAppRunner(web.AppRunner):
    """An AppRunner whose connections are guarded.

    `options` are aiohttp's per-connection settings (keepalive_timeout, access_log, ...).
    """

    def __init__(
        self,
        app: web.Application,
        guard: ConnectionGuard,
        *,
        shutdown_timeout: float,
        **options: Any,
    ) -> None:
        super().__init__(app, handle_signals=False, shutdown_timeout=shutdown_timeout)
        self._guard = guard
        self._options = options

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        loop = asyncio.get_running_loop()
        return GuardedServer(self._guard, plain, loop=loop, **self._options)
