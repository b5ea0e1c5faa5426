"""A compression bomb (`Content-Encoding: gzip`, gigabytes of zeros in a few megabytes) gets a
413 once the decoded body passes max_request_size, and no more of it is ever decoded."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import zlib
from collections.abc import Callable
from pathlib import Path

from tests.conftest import EXAMPLE, Daemon

CAP = 8 * 1024 * 1024
MEMBER_ZEROS = 64 * 1024 * 1024
MEMBERS = 96  # 6 GiB decoded, about 6 MB sent
# Decoding 8 MiB takes milliseconds; decoding the whole bomb takes seconds of CPU.
CPU_BUDGET_SECONDS = 1.0
RSS_GROWTH_BUDGET = 64 * 1024 * 1024


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime and stime, the 14th and 15th fields of the line.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/PID/status")


def post(
    conn: http.client.HTTPConnection, body: bytes, encoding: str
) -> tuple[int, dict[str, object]]:
    headers = {"Content-Type": "application/json", "Content-Encoding": encoding}
    conn.request("POST", "/batch/hello", body=body, headers=headers)
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def test_gzip_bomb_stops_decoding_at_the_cap(make_daemon: Callable[..., Daemon]) -> None:
    daemon = make_daemon(max_request_size=CAP)
    daemon.client.deploy(EXAMPLE)
    assert daemon.process is not None
    pid = daemon.process.pid
    bomb = gzip.compress(bytes(MEMBER_ZEROS), 9) * MEMBERS
    assert len(bomb) < CAP

    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=60)
    try:
        # Encoded bodies that fit are decoded: gzip, zlib "deflate", several gzip members.
        job = json.dumps({"item_list": {"items": list(range(10)), "batch_size": 5}}).encode()
        for encoding, body in (
            ("gzip", gzip.compress(job)),
            ("deflate", zlib.compress(job)),
            ("gzip", gzip.compress(job[:20]) + gzip.compress(job[20:])),
        ):
            status, answer = post(conn, body, encoding)
            assert status == 200, answer
            assert answer["total_batch_count"] == 2
        status, answer = post(conn, b"\x1f\x8b garbage", "gzip")
        assert status == 400 and answer["error"]["field"] == "Content-Encoding"
        status, answer = post(conn, job, "br")
        assert status == 415 and answer["error"]["field"] == "Content-Encoding"

        cpu_before, rss_before = cpu_seconds(pid), peak_rss(pid)
        status, answer = post(conn, bomb, "gzip")
        assert status == 413, answer
        assert "max_request_size" in answer["error"]["message"]
        # The same connection: answered only once the daemon is done with the bomb's rest.
        conn.request("GET", "/healthz")
        healthz = conn.getresponse()
        assert healthz.status == 200 and json.loads(healthz.read()) == {"status": "ok"}
        spent = cpu_seconds(pid) - cpu_before
        grown = peak_rss(pid) - rss_before
    finally:
        conn.close()
    assert spent < CPU_BUDGET_SECONDS, f"the daemon spent {spent:.2f}s of CPU on the bomb"
    assert grown < RSS_GROWTH_BUDGET, f"the daemon's peak RSS grew by {grown >> 20} MiB"
    # The three decoded jobs were admitted; nothing of the refused ones was.
    assert len(daemon.client.list_jobs("hello")) == 3
