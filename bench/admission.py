"""Admission: 1,000,000 items in one item_list request, batch_size 1 and 100; seconds to
the 2xx, while a thread polls GET /healthz every 10 ms (the longest gap between answers is
the event loop's longest stall). The job's workers wait in __init__ (the gate handler), so
nothing drains while the clock runs.

Limit: the raw sqlite3 bulk insert of the same rows, one per batch, with the same payloads
(compact JSON, serialized beforehand): executemany in one transaction, WAL,
synchronous=FULL, into a table like batchd's (id INTEGER PRIMARY KEY, state, payload BLOB)
without its index.
"""

from __future__ import annotations

import http.client
import itertools
import json
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

from bench.common import Context, Daemon, Result, Target, chunks, job_body, progress, ratio

KEY = "admission"
TITLE = "Admission of 1,000,000 items in one request"


class HealthPoller(threading.Thread):
    """GET /healthz every 10 ms or so; the times at which answers came. The pause keeps the
    probe light (back to back, it took a core from the admission it watches), and 10 ms is
    fine enough for the stalls that matter."""

    interval = 0.01

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.answers: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                conn.request("GET", "/healthz")
                response = conn.getresponse()
                response.read()
                conn.close()
                if response.status == 200:
                    self.answers.append(time.perf_counter())
            except OSError:
                pass
            self.stop.wait(self.interval)

    def longest_gap(self, start: float, end: float) -> float:
        marks = [start, *[t for t in self.answers if start < t < end], end]
        return max(b - a for a, b in itertools.pairwise(marks))


def raw_insert_s(workdir: Path, items: int, batch_size: int) -> float:
    payloads = [
        json.dumps(chunk, separators=(",", ":")).encode()
        for chunk in chunks(list(range(items)), batch_size)
    ]
    with tempfile.TemporaryDirectory(dir=workdir) as root:
        conn = sqlite3.connect(Path(root) / "raw.sqlite3", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(
            "CREATE TABLE batches (id INTEGER PRIMARY KEY, state TEXT NOT NULL, "
            "payload BLOB NOT NULL)"
        )
        rows = ((seq, payload) for seq, payload in enumerate(payloads, start=1))
        start = time.perf_counter()
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO batches (id, state, payload) VALUES (?, 'queued', ?)", rows)
        conn.execute("COMMIT")
        elapsed = time.perf_counter() - start
        conn.close()
    return elapsed


def admit(ctx: Context, items: int, batch_size: int) -> tuple[float, float, int]:
    """(seconds to the 2xx, longest /healthz gap, status answers) on a fresh daemon."""
    with Daemon(ctx.workdir, f"admission{batch_size}") as daemon:
        gate = daemon.root / "gate"
        api = daemon.deploy("gate")
        body = job_body(list(range(items)), batch_size, config={"gate": str(gate)})
        poller = HealthPoller(daemon.port)
        poller.start()
        time.sleep(0.2)
        start = time.perf_counter()
        spec = daemon.submit(api, body)
        end = time.perf_counter()
        poller.stop.set()
        poller.join(60)
        expected = -(-items // batch_size)
        if int(spec["total_batch_count"]) != expected:
            raise RuntimeError(f"admitted {spec['total_batch_count']} batches, not {expected}")
        daemon.client.stop_job(api, str(spec["job_id"]))
        gate.touch()
        answered = sum(1 for t in poller.answers if start < t < end)
        return end - start, poller.longest_gap(start, end), answered


def run(ctx: Context) -> Result:
    n = ctx.sizes.admission_items
    result = Result(
        KEY,
        TITLE,
        f"{n:,} items in one item_list request, fresh daemon, workers held in __init__; "
        "seconds from the POST to the 2xx, and the longest gap between /healthz answers "
        "(polled every 10 ms) meanwhile. Limit: the raw sqlite3 bulk insert of the same "
        "rows (see bench/admission.py).",
    )
    for attempt in range(1, ctx.runs + 1):
        for batch_size in (1, 100):
            raw = raw_insert_s(ctx.workdir, n, batch_size)
            seconds, gap, answered = admit(ctx, n, batch_size)
            progress(
                f"admission run {attempt}/{ctx.runs}, batch_size {batch_size}: {seconds:.2f} s "
                f"(raw insert {raw:.2f} s), longest /healthz gap {gap * 1000:.0f} ms"
            )
            result.add(f"batch_size {batch_size}: POST to 2xx", "s", seconds, 2)
            result.add(f"batch_size {batch_size}: raw sqlite3 bulk insert", "s", raw, 3)
            result.add(f"batch_size {batch_size}: longest /healthz gap", "ms", gap * 1000)
            result.add(f"batch_size {batch_size}: /healthz answers during admission", "", answered)
    for batch_size in (1, 100):
        result.targets.append(
            Target(
                f"admission batch_size {batch_size} / raw insert",
                ratio(
                    result.median(f"batch_size {batch_size}: POST to 2xx"),
                    result.median(f"batch_size {batch_size}: raw sqlite3 bulk insert"),
                ),
                "<=",
                1.0,
                "x",
                1,
            )
        )
    return result
