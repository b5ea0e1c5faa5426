"""Thousands of connections that send half a request header, more than the daemon has file
descriptors for: /healthz and job submissions still answer, and the slow connections are
closed (the longest-idle at the connection cap, the rest after header_timeout)."""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testkit.launcher import Daemon
from tests.conftest import DEFAULT_TEST_CONFIG, EXAMPLE, wait_for, wait_job

SLOW_CONNECTIONS = 2000
# The daemon starts with fewer descriptors than that (soft 512, hard 1024): it must raise
# its soft limit to the hard one, and keep connections under what that allows.
DAEMON_SOFT_NOFILE = 512
DAEMON_HARD_NOFILE = 1024
# Long enough that more connections than the cap are open at once on a slow machine.
HEADER_TIMEOUT = 5.0
HALF_A_HEADER = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


def limit_open_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (DAEMON_SOFT_NOFILE, DAEMON_HARD_NOFILE))


@pytest.fixture
def own_fd_limit() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = SLOW_CONNECTIONS + 512
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"this test needs {needed} open files; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def soft_nofile(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-file limit in /proc/PID/limits")


def healthz(url: str) -> bool:
    with urllib.request.urlopen(url + "/healthz", timeout=10) as response:
        return bool(json.loads(response.read()) == {"status": "ok"})


def closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def test_thousands_of_slow_connections(tmp_path: Path, own_fd_limit: None) -> None:
    daemon = Daemon(
        state_dir=tmp_path / "state",
        config_path=tmp_path / "batchd.toml",
        config={**DEFAULT_TEST_CONFIG, "header_timeout": HEADER_TIMEOUT},
        log_path=tmp_path / "daemon.log",
        preexec_fn=limit_open_files,
        client_timeout=60,
    )
    port, url = daemon.port, daemon.url
    slow: list[socket.socket] = []
    try:
        daemon.start()
        assert soft_nofile(daemon.pid) == DAEMON_HARD_NOFILE
        client = daemon.client
        client.deploy(EXAMPLE)

        for _ in range(SLOW_CONNECTIONS):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            slow.append(sock)
            with contextlib.suppress(OSError):
                sock.sendall(HALF_A_HEADER)
        # All of them are still within header_timeout: only the cap keeps room.
        assert healthz(url)
        job = client.submit("hello", {"item_list": {"items": [1, 2, 3], "batch_size": 1}})
        assert wait_job(client, "hello", job["job_id"])["status"] == "succeeded"
        assert healthz(url)

        # One more client sends half a header and nothing else: it is cut off in time.
        late = socket.create_connection(("127.0.0.1", port), timeout=HEADER_TIMEOUT * 5)
        late.sendall(HALF_A_HEADER)
        started = time.monotonic()
        with contextlib.suppress(ConnectionResetError):
            assert late.recv(1) == b""
        waited = time.monotonic() - started
        late.close()
        assert HEADER_TIMEOUT - 0.5 < waited < HEADER_TIMEOUT + 5, waited

        # By then every slow connection was closed by the daemon, one way or the other.
        open_ones = wait_for(
            lambda: sum(not closed_by_peer(s) for s in slow) == 0 or None,
            HEADER_TIMEOUT * 3,
            "the daemon to close every slow connection",
        )
        assert open_ones
        assert healthz(url)
    finally:
        for sock in slow:
            sock.close()
        returncode = daemon.stop(timeout=30)
        daemon.close()
    assert returncode == 0, daemon.output()
    assert "connection cap reached" in daemon.output()


def test_connection_over_the_cap_gets_503_when_all_are_busy(
    make_daemon: Callable[..., Daemon],
) -> None:
    cap = 4
    daemon = make_daemon(max_connections=cap)
    daemon.client.deploy(EXAMPLE)
    busy: list[socket.socket] = []
    try:
        # Each connection is inside a request: its handler waits for a body that never comes.
        # "100 Continue" comes back once the request is being handled.
        for _ in range(cap):
            sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=30)
            busy.append(sock)
            sock.sendall(
                b"POST /batch/hello HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Expect: 100-continue\r\nContent-Length: 100\r\n\r\n"
            )
            assert sock.recv(4096).startswith(b"HTTP/1.1 100 Continue")
            sock.sendall(b"{")
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=30) as extra:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while chunk := extra.recv(4096):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 "), answer
        assert b"Retry-After: 1" in head
        assert json.loads(body)["error"]["message"] == "too many connections; retry shortly"
        # A busy connection that ends makes room again.
        busy.pop().close()
        wait_for(lambda: _healthz_or_none(daemon.url), 30, "/healthz after a slot freed")
        # Neither the refusal nor the client that left mid-body is an error in the log.
        log = daemon.output()
        assert "Exception in callback" not in log and "unhandled error" not in log, log
    finally:
        for sock in busy:
            sock.close()


def _healthz_or_none(url: str) -> bool | None:
    try:
        return healthz(url)
    except OSError:
        return None


def test_idle_keep_alive_connection_is_closed_after_keepalive_timeout(
    make_daemon: Callable[..., Daemon],
) -> None:
    keepalive = 1.5
    daemon = make_daemon(keepalive_timeout=keepalive, header_timeout=30.0)
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=30) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK")
        answered = time.monotonic()
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(1) == b""
        idle = time.monotonic() - answered
    assert keepalive - 0.5 < idle < keepalive + 5, idle
