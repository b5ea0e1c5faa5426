"""Bearer tokens, the read-only token, refusing exposed listeners, and input limits."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from batchd.client import BatchdError, Client
from testkit.launcher import free_port
from tests.conftest import EXAMPLE, Daemon, wait_job

FULL = "full-token-0123456789abcdef"
READ = "read-token-0123456789abcdef"


def call(
    daemon: Daemon, method: str, path: str, token: str | None, body: bytes | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    request = urllib.request.Request(daemon.url + path, data=body, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


@pytest.fixture
def secured(make_daemon: Callable[..., Daemon], tmp_path: Path) -> Daemon:
    (tmp_path / "token").write_text(FULL + "\n")
    (tmp_path / "read-token").write_text(READ)
    daemon = make_daemon(
        token_file=str(tmp_path / "token"), read_only_token_file=str(tmp_path / "read-token")
    )
    Client(daemon.url, token=FULL).deploy(EXAMPLE)
    return daemon


def test_tokens_are_required_and_checked(secured: Daemon) -> None:
    assert call(secured, "GET", "/healthz", None)[0] == 200
    for token in (None, "wrong-token-0123456789abcdef", FULL[:-1]):
        status, body, headers = call(secured, "GET", "/apis", token)
        assert status == 401
        assert headers["WWW-Authenticate"] == 'Bearer realm="batchd"'
        assert "token" in body["error"]["message"]
    assert call(secured, "GET", "/apis", FULL)[0] == 200
    assert call(secured, "GET", "/apis", READ)[0] == 200
    job = json.dumps({"item_list": {"items": [1], "batch_size": 1}}).encode()
    status, body, _ = call(secured, "POST", "/batch/hello", READ, job)
    assert status == 403 and "read-only" in body["error"]["message"]
    assert Client(secured.url, token=READ).list_jobs("hello") == []
    with pytest.raises(BatchdError) as unauthorised:
        Client(secured.url, token=None).list_apis()
    assert unauthorised.value.status == 401


def test_workers_get_the_token_for_chained_calls(
    secured: Daemon, make_project: Callable[..., Path]
) -> None:
    client = Client(secured.url, token=FULL)
    client.deploy(
        make_project(
            "asker",
            """
            import batchd

            class Handler:
                def __init__(self, config):
                    pass

                def handle_batch(self, payload):
                    return [api["name"] for api in batchd.client().list_apis()]
            """,
        )
    )
    job = client.submit("asker", {"item_list": {"items": [1], "batch_size": 1}})
    assert wait_job(client, "asker", job["job_id"])["status"] == "succeeded"
    assert [r["result"] for r in client.results("asker", job["job_id"])] == [["asker", "hello"]]


def serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batchd", "serve", "--state-dir", str(tmp_path / "s"), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_refuses_a_non_loopback_listener_without_a_token(tmp_path: Path) -> None:
    result = serve(tmp_path, "--listen", f"0.0.0.0:{free_port()}")
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0" in result.stderr
    assert "token_file" in result.stderr


def test_unreadable_or_short_token_file_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'token_file = "{tmp_path / "missing"}"\n')
    result = serve(tmp_path, "--config", str(config), "--listen", f"127.0.0.1:{free_port()}")
    assert result.returncode == 2 and "token_file: cannot read" in result.stderr
    (tmp_path / "short").write_text("abc")
    config.write_text(f'token_file = "{tmp_path / "short"}"\n')
    result = serve(tmp_path, "--config", str(config), "--listen", f"127.0.0.1:{free_port()}")
    assert result.returncode == 2 and "shorter than 16" in result.stderr


def test_limits(make_daemon: Callable[..., Daemon]) -> None:
    daemon = make_daemon(max_request_size=4096, max_batches_per_job=5)
    client = daemon.client
    client.deploy(EXAMPLE)
    too_many = json.dumps({"item_list": {"items": list(range(6)), "batch_size": 1}}).encode()
    status, body, _ = call(daemon, "POST", "/batch/hello", None, too_many)
    assert status == 413 and body["error"]["field"] == "item_list.batch_size"
    huge = json.dumps({"item_list": {"items": ["x" * 5000], "batch_size": 1}}).encode()
    status, body, _ = call(daemon, "POST", "/batch/hello", None, huge)
    assert status == 413 and "max_request_size" in body["error"]["message"]
    assert client.list_jobs("hello") == []


def test_slow_client_is_dropped(make_daemon: Callable[..., Daemon]) -> None:
    daemon = make_daemon(request_read_timeout=1)
    daemon.client.deploy(EXAMPLE)
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=30) as sock:
        sock.sendall(
            b"POST /batch/hello HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        started = time.monotonic()
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert time.monotonic() - started < 30
