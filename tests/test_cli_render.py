"""The CLI's human forms of sizes, times and log records: pure functions, no process."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from batchd.cli.render import ago, job_duration, log_line
from batchd.cli.render import format_seconds as fmt
from batchd.packing import human_size

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()


def iso(seconds_before_now: float) -> str:
    return datetime.fromtimestamp(NOW - seconds_before_now, tz=UTC).isoformat()


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0.0, "0ms"),
        (0.4204, "420ms"),
        (4.254, "4.25s"),
        (12.34, "12.3s"),
        (59.94, "59.9s"),
        (245.9, "4m05s"),
        (3599.0, "59m59s"),
        (7380.0, "2h03m"),
        (90061.0, "25h01m"),
    ],
)
def test_format_seconds(seconds: float, shown: str) -> None:
    assert fmt(seconds) == shown


@pytest.mark.parametrize(
    ("before", "shown"),
    [(0, "0s ago"), (59, "59s ago"), (60, "1m ago"), (3599, "59m ago"), (7200, "2h ago")],
)
def test_ago(before: int, shown: str) -> None:
    assert ago(iso(before), NOW) == shown


def test_ago_of_days_nothing_and_the_future() -> None:
    assert ago(iso(3 * 86400 + 5), NOW) == "3d ago"
    assert ago(None, NOW) == "-"
    assert ago("", NOW) == "-"
    # A clock a little ahead of this one: never a negative age.
    assert ago(iso(-30), NOW) == "0s ago"


def test_job_duration_runs_to_now_until_the_job_ends() -> None:
    assert job_duration({"start_time": iso(125), "end_time": None}, NOW) == "2m05s"
    assert job_duration({"start_time": iso(125), "end_time": iso(120)}, NOW) == "5.00s"
    assert job_duration({"start_time": None}, NOW) == "-"


def test_log_line_shows_the_batch_and_the_traceback() -> None:
    record = {
        "asctime": "2026-01-02 03:04:05,678",
        "levelname": "ERROR",
        "message": "boom",
        "labels": {"batchID": "job-7"},
        "exc_info": "Traceback (most recent call last):\nValueError: x\n",
    }
    assert log_line(record) == (
        "2026-01-02 03:04:05,678 ERROR    [job-7] boom\n"
        "Traceback (most recent call last):\nValueError: x"
    )
    assert log_line({"asctime": "t", "levelname": "INFO", "message": "hi"}) == "t INFO     hi"


@pytest.mark.parametrize(
    ("size", "shown"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (5 * 1024**2, "5.0 MiB"),
        (5 * 1024**3, "5.0 GiB"),
        # GiB is the largest unit `status`, `prune` and `apis` show.
        (2 * 1024**4, "2048.0 GiB"),
    ],
)
def test_sizes_as_status_prune_and_apis_show_them(size: int, shown: str) -> None:
    assert human_size(size) == shown
