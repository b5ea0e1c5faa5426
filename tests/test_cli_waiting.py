"""Waiting commands ride out the daemon: `get --watch` and `logs -f` across a real daemon
stopped and started again on the same port and state dir, and giving up (exit 69) when it
stays away; `Client.wait` honours a 503's Retry-After."""

from __future__ import annotations

import http.server
import json
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from batchd.cli.render import log_line
from batchd.client import Client, DaemonLost
from testkit.launcher import Daemon
from tests.test_cli import GATED_HANDLER, cli_env, command, read_until, settle

Project = Callable[..., Path]


def gated_job(daemon: Daemon, make_project: Project, gate: Path) -> str:
    """A job whose one batch waits for `gate`; it may be leased again after a restart."""
    daemon.client.deploy(
        make_project("gated", GATED_HANDLER, extra_toml=f'[handler.env]\nGATE = "{gate}"\n')
    )
    job = {"max_receive_count": 5, "item_list": {"items": [1], "batch_size": 1}}
    job_id: str = daemon.client.submit("gated", job)["job_id"]
    return job_id


def started(url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command(url, *args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )


def read_stderr_until(process: subprocess.Popen[str], pattern: str) -> list[str]:
    assert process.stderr is not None
    lines: list[str] = []
    while not lines or not re.search(pattern, lines[-1]):
        line = process.stderr.readline()
        assert line, f"stderr ended before {pattern!r}: {lines}"
        lines.append(line.rstrip("\n"))
    return lines


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["stop", "kill"])
def test_watch_and_follow_ride_out_a_daemon_restart(
    make_daemon: Callable[..., Daemon], make_project: Project, tmp_path: Path, sig: int
) -> None:
    daemon = make_daemon(worker_stop_grace=0.5)
    gate = tmp_path / "gate"
    job_id = gated_job(daemon, make_project, gate)
    watching = started(daemon.url, "get", "gated", job_id, "-w", "--interval", "0.05")
    following = started(daemon.url, "logs", "gated", job_id, "-f")
    read_until(watching, r"^running ")
    (first,) = read_until(following, "waiting for the gate")

    daemon.stop(sig)
    daemon.start()
    # Both said they lost it, and both found it again, before the job can end.
    for process in (watching, following):
        lines = read_stderr_until(process, r"^batchd: reconnected$")
        assert re.fullmatch(r"batchd: reconnecting… \(.+; giving up in .+\)", lines[0]), lines
    gate.touch()

    out, err = watching.communicate(timeout=120)
    assert (watching.returncode, err) == (0, "")
    assert re.match(
        rf"job {job_id} succeeded: 1/1 batches succeeded, 0 failed", out.splitlines()[-1]
    )
    out, err = following.communicate(timeout=120)
    assert (following.returncode, err) == (0, "")
    # Every record of the job's log once, in order: none twice across the reconnect, none
    # missed while the daemon was away.
    records = list(daemon.client.stream_job_logs("gated", job_id))
    assert [first, *out.splitlines()] == [log_line(record) for record in records]
    assert [r["message"] for r in records].count("through the gate") == 1
    settle(daemon, "gated", job_id)


def test_waiting_gives_up_when_the_daemon_stays_away(
    daemon: Daemon, make_project: Project, tmp_path: Path
) -> None:
    job_id = gated_job(daemon, make_project, tmp_path / "gate")
    args = ("gated", job_id, "--reconnect-timeout", "1")
    watching = started(daemon.url, "get", *args, "--watch", "-o", "json")
    following = started(daemon.url, "logs", *args, "--follow")
    read_until(following, "waiting for the gate")
    daemon.stop()
    began = time.monotonic()
    for process in (watching, following):
        out, err = process.communicate(timeout=60)
        *notes, error = err.splitlines()
        assert (process.returncode, out) == (69, ""), err
        assert re.fullmatch(r"batchd: reconnecting… \(.+\)", notes[0]), err
        assert error.startswith(f"error: gave up after 1s: cannot reach batchd at {daemon.url}")
        assert error.endswith(f"is `batchd serve` running? (BATCHD_URL={daemon.url})")
    assert time.monotonic() - began < 30


class FlakyServer(http.server.BaseHTTPRequestHandler):
    """A stand-in daemon that answers 503 with Retry-After `busy` times, then the job."""

    busy = 0
    seen: list[float] = []

    def do_GET(self) -> None:
        type(self).seen.append(time.monotonic())
        if type(self).busy:
            type(self).busy -= 1
            self.answer(503, {"error": {"message": "busy"}}, {"Retry-After": "1"})
        else:
            status = {"job_id": "j", "status": "succeeded"}
            self.answer(200, {"job_status": status})

    def answer(self, code: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        for key, value in {"Content-Length": str(len(data)), **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def flaky() -> Iterator[tuple[str, type[FlakyServer]]]:
    handler = type("F", (FlakyServer,), {"seen": [], "busy": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_wait_honours_retry_after(flaky: tuple[str, type[FlakyServer]]) -> None:
    url, server = flaky
    server.busy = 1
    told: list[tuple[str | None, float]] = []
    status = Client(url).wait("api", "j", on_reconnect=lambda *note: told.append(note))
    assert status["status"] == "succeeded"
    first, second = server.seen
    # The backoff alone would have tried again within 0.2 s.
    assert second - first >= 1.0
    assert [reason for reason, _ in told] == ["busy", None]
    server.busy = 10
    with pytest.raises(DaemonLost) as lost:
        Client(url).wait("api", "j", reconnect_timeout=1.5)
    assert (lost.value.status, lost.value.message) == (503, "gave up after 1.5s: busy")
    # Tried again until the time was up: 1 s after Retry-After, then what was left.
    assert len(server.seen) >= 4
    # The wait's own timeout came first: the message gives that one, not the reconnect's.
    server.busy = 10
    with pytest.raises(DaemonLost) as lost:
        Client(url).wait("api", "j", timeout=1.2, reconnect_timeout=60)
    assert (lost.value.status, lost.value.message) == (503, "gave up after 1.2s: busy")
