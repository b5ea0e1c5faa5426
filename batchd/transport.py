"""How the client talks to a daemon (standard library only): requests over urllib, TCP or a
Unix socket; failures as :class:`BatchdError`; and waiting out a daemon that went away.

:class:`batchd.client.Client` is a :class:`Transport`; ``BatchdError`` and ``DaemonLost``
are part of the client's API and imported from there.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any

from batchd.constants import ENV_URL
from batchd.reconnect import TRANSIENT_STATUSES, Outage
from batchd.urls import UNIX_SCHEME

Record = dict[str, Any]
# Added to "cannot reach" when nothing listens at the URL.
SERVE_HINT = "is `batchd serve` running?"


class BatchdError(Exception):
    """Any failed call: the HTTP status (0 when unreachable), the message and its field."""

    # The answer's Retry-After in seconds (a 503's), set where the answer is read.
    retry_after: float | None = None

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.message = message
        self.field = field

    @property
    def transient(self) -> bool:
        """The daemon could not be reached, or could not serve just now: worth waiting out."""
        return self.status in TRANSIENT_STATUSES


class DaemonLost(BatchdError):
    """A waiting call gave up: the daemon stayed unreachable (or 503) past the reconnect
    timeout. The message is the last failure's."""


class Transport:
    """Requests to the daemon at `url`, with `token`, each with a `timeout` (seconds)."""

    url: str
    token: str | None
    timeout: float

    def _ride_out(self, outage: Outage, exc: BatchdError) -> None:
        """Wait before trying again after `exc`; raise it when it is not worth waiting out,
        or as :class:`DaemonLost` when the daemon has been gone too long."""
        if not exc.transient:
            raise exc
        if not outage.wait(exc.message, exc.retry_after):
            # The limit that applied: a wait's own timeout may come before the reconnect's.
            waited = f"gave up after {round(outage.limit, 1):.10g}s: " if outage.tries else ""
            raise DaemonLost(exc.status, waited + exc.message)

    def _open(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str | None = None,
        query: Mapping[str, str] | None = None,
        *,
        timeout: float | None,
        accept: str = "application/json",
    ) -> http.client.HTTPResponse:
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        request = urllib.request.Request(url, data=body, method=method)
        request.add_header("Accept", accept)
        if content_type:
            request.add_header("Content-Type", content_type)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            response: http.client.HTTPResponse = _OPENER.open(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            with exc:
                raise _error_from(exc) from None
        except urllib.error.URLError as exc:
            raise self._unreachable(exc.reason) from None
        except (OSError, http.client.HTTPException) as exc:
            # Timeouts and dropped connections: still "cannot reach", never a traceback.
            raise self._unreachable(exc) from None
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._read_json(self._open(method, path, timeout=self.timeout, **kwargs))

    def _read_json(self, response: http.client.HTTPResponse) -> Any:
        with response:
            try:
                raw = response.read()
            except (OSError, http.client.HTTPException) as exc:
                raise self._unreachable(exc) from None
            try:
                return json.loads(raw)
            except ValueError:
                raise BatchdError(
                    response.status, f"{self.url} answered with something other than JSON"
                ) from None

    def _stream(
        self, path: str, query: Mapping[str, str], timeout: float | None
    ) -> Iterator[Record]:
        # Opened now, so a 404 is raised by the call, not by the first next().
        response = self._open("GET", path, query=query, timeout=timeout)
        return self._records(response)

    def _records(self, response: http.client.HTTPResponse) -> Iterator[Record]:
        with response:
            try:
                for line in response:
                    if line.strip():
                        yield json.loads(line)
            except (OSError, http.client.HTTPException) as exc:
                raise BatchdError(
                    0, f"lost the connection to batchd at {self.url}: {exc}"
                ) from None

    def _unreachable(self, reason: object) -> BatchdError:
        message = f"cannot reach batchd at {self.url}: {reason}"
        # Nothing listens there (a TCP port, or a Unix socket's path).
        if isinstance(reason, ConnectionRefusedError | FileNotFoundError):
            message += f"; {SERVE_HINT} ({ENV_URL}={self.url})"
        return BatchdError(0, message)


class _UnixSocketConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket; the URL's host is the socket's path, percent-encoded."""

    def __init__(self, host: str, timeout: float | None = None, **_: Any) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = urllib.parse.unquote(host)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


class _UnixSocketHandler(urllib.request.AbstractHTTPHandler):
    def unix_socket_open(self, request: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_UnixSocketConnection, request)


# urllib finds a scheme's handler method by name: "http+unix_open" for http+unix:// URLs.
setattr(_UnixSocketHandler, f"{UNIX_SCHEME}_open", _UnixSocketHandler.unix_socket_open)
setattr(
    _UnixSocketHandler, f"{UNIX_SCHEME}_request", urllib.request.AbstractHTTPHandler.do_request_
)
_OPENER = urllib.request.build_opener(_UnixSocketHandler())


def _error_from(exc: urllib.error.HTTPError) -> BatchdError:
    try:
        raw = exc.read()
    except (OSError, http.client.HTTPException):
        raw = b""
    try:
        error = json.loads(raw)["error"]
        failure = BatchdError(exc.code, str(error["message"]), error.get("field"))
    except (ValueError, KeyError, TypeError):
        failure = BatchdError(exc.code, raw.decode(errors="replace").strip() or str(exc.reason))
    failure.retry_after = _seconds(exc.headers.get("Retry-After"))
    return failure


def _seconds(retry_after: str | None) -> float | None:
    """A Retry-After in seconds; its HTTP-date form (never sent by batchd) is ignored."""
    try:
        return None if retry_after is None else max(0.0, float(retry_after))
    except ValueError:
        return None
