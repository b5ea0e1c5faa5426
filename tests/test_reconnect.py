"""Pure pieces of the client and the CLI, no process: the reconnect backoff, URL checks,
the reconnect timeout from the environment, and how the CLI reads --status, --since and
a submitted file."""

from __future__ import annotations

import argparse
import io
import time

import pytest

from batchd.cli.commands.jobs import is_json_lines, since_time, status_names
from batchd.cli.render import ReconnectNotice
from batchd.client import Client
from batchd.reconnect import FIRST_DELAY, MAX_DELAY, Outage, reconnect_timeout
from batchd.urls import checked_url


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def test_backoff_doubles_with_jitter_up_to_a_cap_and_gives_up_in_time() -> None:
    fake = FakeTime()
    told: list[tuple[str | None, float]] = []
    outage = Outage(60, lambda *note: told.append(note), sleep=fake.sleep, clock=fake.clock)
    while outage.wait("refused"):
        pass
    delays = fake.slept
    # Each delay in the upper half of its doubling step, capped.
    for tries, delay in enumerate(delays[:-1]):
        step = min(MAX_DELAY, FIRST_DELAY * 2**tries)
        assert step / 2 <= delay <= step
    assert max(delays) <= MAX_DELAY and len(set(delays)) > 5
    # The last wait is cut to what was left: given up 60 s after the first failure.
    assert fake.now == pytest.approx(160.0)
    assert told[0] == ("refused", 60) and told[-1][1] == pytest.approx(delays[-1])
    outage.over()
    assert told[-1] == (None, 0.0) and (outage.began, outage.tries) == (None, 0)
    # A new outage has its own 60 s, from the first delay again.
    assert outage.wait("refused") and fake.slept[-1] <= FIRST_DELAY


def test_retry_after_is_a_floor_and_the_timeout_still_a_ceiling() -> None:
    fake = FakeTime()
    outage = Outage(10, sleep=fake.sleep, clock=fake.clock)
    assert outage.wait("busy", retry_after=4)
    assert outage.wait("busy", retry_after=4)
    assert outage.wait("busy", retry_after=4)
    assert fake.slept == [4, 4, 2]
    assert not outage.wait("busy", retry_after=4)
    assert not Outage(0, sleep=fake.sleep, clock=fake.clock).wait("refused")
    # A deadline (Client.wait's timeout) cuts the outage short.
    fake.slept.clear()
    outage = Outage(10, sleep=fake.sleep, clock=fake.clock, deadline=fake.now + 3)
    while outage.wait("busy", retry_after=2):
        pass
    assert fake.slept == [2, 1]


def test_reconnect_timeout_from_the_argument_the_environment_or_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BATCHD_RECONNECT_TIMEOUT", raising=False)
    assert reconnect_timeout() == 300
    monkeypatch.setenv("BATCHD_RECONNECT_TIMEOUT", "12.5")
    assert reconnect_timeout() == 12.5 and reconnect_timeout(3) == 3
    assert Client("http://127.0.0.1:1").reconnect_timeout == 12.5
    monkeypatch.setenv("BATCHD_RECONNECT_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="BATCHD_RECONNECT_TIMEOUT must be a number"):
        reconnect_timeout()
    with pytest.raises(ValueError, match=">= 0 seconds"):
        reconnect_timeout(-1)


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("127.0.0.1:8780", "has no scheme: did you mean http://127.0.0.1:8780?"),
        ("localhost:8780", "has no scheme: did you mean http://localhost:8780?"),
        ("ftp://host/x", "scheme ftp:// is not one of http://, https://, http+unix://"),
        ("http://", "names no host"),
        ("http://host:port", "is not valid: Port could not be cast"),
    ],
)
def test_bad_urls_are_refused_at_once(url: str, error: str) -> None:
    with pytest.raises(ValueError, match=r"^batchd URL ") as refused:
        Client(url)
    assert error in str(refused.value) and "\n" not in str(refused.value)


def test_good_urls_lose_their_trailing_slash() -> None:
    assert checked_url("http://127.0.0.1:8780/") == "http://127.0.0.1:8780"
    assert checked_url("https://batchd.example/") == "https://batchd.example"
    assert checked_url("http+unix://%2Frun%2Fbatchd.sock") == "http+unix://%2Frun%2Fbatchd.sock"


def test_status_names_and_groups() -> None:
    assert status_names("running") == {"running"}
    assert status_names(" Running , STOPPED") == {"running", "stopped"}
    assert status_names("active") == {"pending", "enqueuing", "running", "paused"}
    assert status_names("failed,succeeded") == {
        "completed_with_failures",
        "worker_error",
        "worker_oom",
        "timed_out",
        "enqueue_failed",
        "unexpected_error",
        "succeeded",
    }
    with pytest.raises(argparse.ArgumentTypeError, match="unknown status 'runing'"):
        status_names("runing")


def test_since_takes_a_duration_or_an_iso_time() -> None:
    now = time.time()
    assert since_time("10m") == pytest.approx(now - 600, abs=5)
    assert since_time("1h30m") == pytest.approx(now - 5400, abs=5)
    assert since_time("1.5d") == pytest.approx(now - 129600, abs=5)
    assert since_time("2026-01-02T03:04:05+00:00") == 1767323045.0
    for bad in ("10", "m", "10x", "tomorrow", "-5m"):
        with pytest.raises(argparse.ArgumentTypeError, match="neither a duration"):
            since_time(bad)


@pytest.mark.parametrize(
    ("name", "raw", "lines"),
    [
        ("job.json", b'{"item_list": {"items": [1], "batch_size": 1}}', False),
        ("job.json", b'{\n  "item_list": {"items": [1],\n "batch_size": 1}\n}\n', False),
        ("items.jsonl", b'{"a": 1}\n', True),
        ("items.NDJSON", b"1\n", True),
        ("-", b'1\n{"a": 2}\n', True),
        ("-", b'1\n{"a":\n', True),
        ("-", b"not json\n2\n", False),
        ("-", b"", False),
    ],
)
def test_a_submitted_file_of_json_lines_is_items(name: str, raw: bytes, lines: bool) -> None:
    assert is_json_lines(name, raw) is lines


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_reconnect_notice_redraws_one_line_on_a_terminal() -> None:
    terminal = Terminal()
    with ReconnectNotice(terminal) as notice:
        refused = "cannot reach batchd at http://h:1: [Errno 111] Connection refused"
        notice(f"{refused}; is `batchd serve` running? (BATCHD_URL=http://h:1)", 300)
        notice(refused, 295.5)
        notice(None, 0)
        notice("the queue is busy", 12)
    assert terminal.getvalue() == (
        "\r\x1b[Kreconnecting… ([Errno 111] Connection refused; giving up in 5m00s)"
        "\r\x1b[Kreconnecting… ([Errno 111] Connection refused; giving up in 4m55s)"
        "\r\x1b[K"
        "\r\x1b[Kreconnecting… (the queue is busy; giving up in 12.0s)\n"
    )
    piped = io.StringIO()
    with ReconnectNotice(piped) as notice:
        notice("cannot reach it", 300)
        notice("cannot reach it", 290)
        notice(None, 0)
    assert piped.getvalue() == (
        "batchd: reconnecting… (cannot reach it; giving up in 5m00s)\nbatchd: reconnected\n"
    )
