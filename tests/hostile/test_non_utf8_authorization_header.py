"""An Authorization header holding bytes that are not UTF-8 is a wrong token: 401, not 500."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Daemon

TOKEN = "right-token-0123456789abcdef"


def get_with_authorization(daemon: Daemon, value: bytes) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
    try:
        conn.putrequest("GET", "/apis")
        # Bytes go on the wire as they are, past http.client's own encoding.
        conn.putheader("Authorization", value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_non_utf8_bytes_in_authorization_get_401(
    make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    (tmp_path / "token").write_text(TOKEN)
    daemon = make_daemon(token_file=str(tmp_path / "token"))
    for value in (
        b"Bearer \xff\xfe\x80",
        # The right token with one stray Latin-1 byte is still the wrong token.
        b"Bearer " + TOKEN.encode() + b"\xe9",
        b"\xc3\x28 " + TOKEN.encode(),
    ):
        status, headers, body = get_with_authorization(daemon, value)
        assert status == 401, (value, status, body)
        assert headers["WWW-Authenticate"] == 'Bearer realm="batchd"'
        assert "Authorization" in json.loads(body)["error"]["message"]
    status, _, body = get_with_authorization(daemon, b"Bearer " + TOKEN.encode())
    assert status == 200, body
    assert json.loads(body) == {"apis": []}
    assert "unhandled error" not in daemon.output()
