"""What ``batchd serve`` prints: a sentence and human lines on a terminal, JSON lines under
systemd, into a pipe or with --log-format json; and JSON answers that end with a newline."""

from __future__ import annotations

import http.client
import io
import json
import logging
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from batchd.daemon.logsetup import HumanFormatter, resolve_format
from testkit.launcher import free_port
from tests.conftest import REPO

# time, level, "logger:", message, then key=value pairs.
HUMAN_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (INFO|WARNING|ERROR|DEBUG) +[\w.]+: ")
BANNER = re.compile(
    r"^batchd listening on (http://127\.0\.0\.1:\d+) — dashboard at /, state in (.+)$"
)


@dataclass
class TerminalDaemon:
    """``batchd serve`` with its stdout and stderr on a pseudo-terminal."""

    process: subprocess.Popen[bytes]
    terminal: int
    port: int
    seen: str = ""

    def read_until(self, pattern: re.Pattern[str], timeout: float = 30) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines():
                match = pattern.search(line)
                if match:
                    return match
            left = deadline - time.monotonic()
            assert left > 0, f"no {pattern.pattern!r} in:\n{self.seen}"
            ready, _, _ = select.select([self.terminal], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.terminal, 65536)
                except OSError:  # EIO: the daemon is gone and the terminal closed.
                    chunk = b""
                assert chunk, f"serve ended ({self.process.poll()}):\n{self.seen}"
                self.seen += chunk.decode(errors="replace").replace("\r\n", "\n")

    def lines(self) -> list[str]:
        return self.seen.splitlines()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        os.close(self.terminal)


def serve_command(port: int, state: Path, *args: str) -> list[str]:
    listen = f"127.0.0.1:{port}"
    return [
        sys.executable,
        "-m",
        "batchd",
        "serve",
        "--listen",
        listen,
        "--state-dir",
        str(state),
        *args,
    ]


def serve_on_a_terminal(state: Path, *args: str, **env: str) -> TerminalDaemon:
    terminal, other_end = pty.openpty()
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "INVOCATION_ID")}
    process = subprocess.Popen(
        serve_command(port, state, *args),
        stdin=subprocess.DEVNULL,
        stdout=other_end,
        stderr=other_end,
        cwd=REPO,
        env={**environ, **env},
    )
    os.close(other_end)
    return TerminalDaemon(process, terminal, port)


@pytest.fixture(scope="module")
def on_a_terminal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TerminalDaemon]:
    daemon = serve_on_a_terminal(tmp_path_factory.mktemp("tty") / "state")
    try:
        daemon.read_until(BANNER)
        yield daemon
    finally:
        daemon.stop()


def test_on_a_terminal_serve_says_where_it_listens_in_one_sentence(
    on_a_terminal: TerminalDaemon,
) -> None:
    lines = on_a_terminal.lines()
    (banner,) = [line for line in lines if line.startswith("batchd listening on ")]
    match = BANNER.match(banner)
    assert match, banner
    assert match.group(1) == f"http://127.0.0.1:{on_a_terminal.port}"
    assert Path(match.group(2)).name == "state" and Path(match.group(2)).is_absolute()
    # Before it, only human log lines: the start is told, never as JSON.
    before = lines[: lines.index(banner)]
    assert all(HUMAN_LINE.match(line) for line in before), before


def test_on_a_terminal_log_lines_are_for_people(on_a_terminal: TerminalDaemon) -> None:
    line = on_a_terminal.read_until(re.compile(r"^.* batchd.daemon: worker memory limits .*$"))
    assert HUMAN_LINE.match(line.group(0)), line.group(0)
    assert " memory_limits=" in line.group(0)
    assert not any(text.lstrip().startswith("{") for text in on_a_terminal.lines())


def raw_get(port: int, path: str) -> tuple[int, str, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/healthz", 200),
        ("/status", 200),
        ("/apis", 200),
        ("/jobs", 200),
        ("/openapi.json", 200),
        ("/apis/nope", 404),  # an error of the core
        ("/no/such/route", 404),  # an error of aiohttp's router, answered as JSON
    ],
)
def test_json_answers_end_with_a_newline(
    on_a_terminal: TerminalDaemon, path: str, status: int
) -> None:
    got, content_type, body = raw_get(on_a_terminal.port, path)
    assert (got, content_type.split(";")[0]) == (status, "application/json")
    assert body.endswith(b"}\n") and body.count(b"\n") == 1, body[-40:]
    json.loads(body)


def test_under_systemd_serve_logs_json_even_on_a_terminal(tmp_path: Path) -> None:
    daemon = serve_on_a_terminal(tmp_path / "state", INVOCATION_ID="0123456789abcdef")
    try:
        daemon.read_until(re.compile('"message": "batchd ready"'))
    finally:
        daemon.stop()
    records = [json.loads(line) for line in daemon.lines() if line.strip()]
    ready = [record for record in records if record["message"] == "batchd ready"]
    assert ready and ready[0]["url"] == f"http://127.0.0.1:{daemon.port}"
    assert not any("batchd listening on" in line for line in daemon.lines())


def test_log_format_json_flag_wins_over_the_terminal(tmp_path: Path) -> None:
    daemon = serve_on_a_terminal(tmp_path / "state", "--log-format", "json")
    try:
        daemon.read_until(re.compile('"message": "batchd ready"'))
    finally:
        daemon.stop()
    assert all(json.loads(line)["logger"] for line in daemon.lines() if line.strip())


def test_into_a_pipe_serve_logs_json(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        serve_command(port, tmp_path / "state"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "INVOCATION_ID")},
    )
    assert process.stdout is not None
    try:
        records = []
        for line in process.stdout:
            records.append(json.loads(line))
            if records[-1]["message"] == "batchd ready":
                break
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert records[-1]["state_dir"] == str(tmp_path / "state")


@pytest.mark.parametrize(
    ("setting", "environ", "tty", "chosen"),
    [
        ("auto", {}, True, "human"),
        ("auto", {}, False, "json"),
        ("auto", {"JOURNAL_STREAM": "8:12345"}, True, "json"),
        ("auto", {"INVOCATION_ID": "abc"}, True, "json"),
        ("auto", {"INVOCATION_ID": ""}, True, "human"),
        ("json", {}, True, "json"),
        ("human", {"INVOCATION_ID": "abc"}, False, "human"),
    ],
)
def test_which_format_auto_picks(
    setting: str, environ: dict[str, str], tty: bool, chosen: str
) -> None:
    class Stream(io.StringIO):
        def isatty(self) -> bool:
            return tty

    assert resolve_format(setting, Stream(), environ) == chosen  # type: ignore[arg-type]


def test_human_lines_quote_values_that_would_split() -> None:
    record = logging.LogRecord("batchd.x", logging.WARNING, __file__, 1, "hello %s", ("you",), None)
    record.__dict__.update(
        {"api": "hello", "path": "/a b", "n": 3, "ok": True, "gpus": [0, 1], "eq": "a=b"}
    )
    text = HumanFormatter().format(record)
    assert HUMAN_LINE.match(text), text
    assert text.endswith(
        'WARNING batchd.x: hello you api=hello path="/a b" n=3 ok=true gpus=[0,1] eq="a=b"'
    ), text
