"""Scenario 12: a million items in one request while status requests keep coming."""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from pathlib import Path
from typing import Any

from batchd.client import ACTIVE_STATUSES, BatchdError, Client
from tests.conftest import Daemon
from tests.faults.conftest import StartScenario, items_job, seconds, size
from tests.faults.probes import batch_rows, job_range, read_only


def peak_rss_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return 0


def states(daemon: Daemon, job_id: str) -> dict[str, int]:
    """Batches per state, from one read transaction."""
    with read_only(daemon) as conn:
        (key,) = conn.execute("SELECT key FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        rows = conn.execute(
            "SELECT state, count(*) FROM batches WHERE id BETWEEN ? AND ? GROUP BY state",
            job_range(key),
        ).fetchall()
        (unleased,) = conn.execute(
            "SELECT total_batch_count - materialized FROM jobs WHERE key = ?", (key,)
        ).fetchone()
    found = dict(rows)
    # Batches never leased have no row yet: they are queued in the job's chunks.
    found["queued"] = found.get("queued", 0) + unleased
    return found


def test_million_items_in_one_request(
    scenario: StartScenario,
    figures: dict[str, Any],
) -> None:
    """12a. 1,000,000 items in one request while status requests keep coming
    admitted atomically (2xx and every batch stored); status requests answered all along
    (longest gap reported); exact counts; drain rate measured, then the job is stopped with
    0 leases left and succeeded + queued = total.
    """
    total, workers = size(50_000, 1_000_000), 4
    run = scenario("million", max_workers=workers)
    daemon, client = run.daemon, run.client
    assert daemon.process is not None
    probe = run.submit(items_job(1, config={"results": False}))
    run.wait(probe)
    body = json.dumps(items_job(total, workers=workers, config={"results": False})).encode()

    answers: list[float] = []
    stop = threading.Event()

    def poll() -> None:
        # A status request after another; each must be answered while the POST is admitted.
        poller = Client(daemon.url, timeout=120)
        while not stop.is_set():
            poller.get_job("million", probe)
            answers.append(time.monotonic())

    thread = threading.Thread(target=poll)
    posted = time.monotonic()
    thread.start()
    try:
        spec = client.submit("million", body)
    finally:
        admitted = time.monotonic()
        stop.set()
        thread.join()
    marks = [posted, *[t for t in answers if t <= admitted], admitted]
    longest_gap = max(b - a for a, b in itertools.pairwise(marks))
    job_id = spec["job_id"]
    # Exact counts from one snapshot of the database (the status endpoint's are not one
    # snapshot while the job runs: see test_status_counts_are_one_snapshot).
    stored = states(daemon, job_id)

    # Drain rate: how fast the no-op job goes once running.
    run.wait_succeeded(job_id, 1, what="the job to start")
    first = run.succeeded(job_id)
    measured = time.monotonic()
    target = first + size(2_000, 20_000)
    run.wait_succeeded(job_id, target, timeout=300, what="the drain-rate sample")
    rate = (run.succeeded(job_id) - first) / (time.monotonic() - measured)
    run.stop(job_id)
    final = run.status(job_id)
    by_state = states(daemon, job_id)
    metrics = final["batch_metrics"]
    figures.update(
        items=total,
        admission_s=round(admitted - posted, 2),
        status_answers_during_admission=len(marks) - 2,
        longest_status_gap_s=round(longest_gap, 3),
        daemon_peak_rss_mib=peak_rss_mib(daemon.process.pid),
        drain_batches_per_s=round(rate),
        full_drain_estimate_s=round(total / rate),
        succeeded_at_stop=metrics["succeeded"],
        queued_at_stop=final["batches_in_queue"],
    )
    assert spec["total_batch_count"] == total
    assert sum(stored.values()) == total
    assert len(marks) - 2 > 0, "no status request was answered during the admission"
    assert longest_gap < 10
    assert final["status"] == "stopped"
    assert metrics["in_progress"] == 0 and metrics["failed"] == 0
    assert metrics["succeeded"] + final["batches_in_queue"] == total
    assert by_state.get("succeeded", 0) == metrics["succeeded"]
    assert by_state.get("queued", 0) == final["batches_in_queue"]
    assert "leased" not in by_state
    # Every batch stored as succeeded was really handled.
    calls = run.side.calls()
    rows = batch_rows(daemon, job_id)
    succeeded = {f"{job_id}-{seq}" for seq, row in rows.items() if row.state == "succeeded"}
    assert succeeded <= set(calls)
    figures["elapsed_s"] = seconds(posted)


def test_status_counts_are_one_snapshot(
    scenario: StartScenario,
    figures: dict[str, Any],
) -> None:
    """12b. Status counts while a job runs fast
    every status answer adds up: batches_in_queue + in_progress + succeeded + failed =
    total_batch_count.
    """
    total = size(20_000, 100_000)
    run = scenario("snapshot", max_workers=4)
    job_id = run.submit(items_job(total, workers=4, config={"results": False}))
    polls, off = 0, []
    started = time.monotonic()
    status = run.status(job_id)
    while time.monotonic() - started < 10 and not off and status["status"] in ACTIVE_STATUSES:
        status = run.status(job_id)
        metrics = status["batch_metrics"]
        counted = status["batches_in_queue"] + sum(
            metrics[k] for k in ("in_progress", "succeeded", "failed")
        )
        polls += 1
        if counted != total:
            off.append(counted - total)
    with contextlib.suppress(BatchdError):  # it may have ended on its own meanwhile
        run.stop(job_id)
    figures.update(polls=polls, first_discrepancy=off[0] if off else 0)
    assert polls > 0
    assert off == []


def test_submissions_while_status_requests_keep_coming(
    scenario: StartScenario,
    figures: dict[str, Any],
) -> None:
    """12c. Small submissions while status requests keep coming
    every submission answers 2xx, and every stored job is one that was answered and runs.
    """
    run = scenario("busy", max_workers=4)
    daemon, client = run.daemon, run.client
    probe = run.submit(items_job(5_000, workers=2, config={"delay": 0.01}))
    stop = threading.Event()

    def poll() -> None:
        poller = Client(daemon.url, timeout=120)
        while not stop.is_set():
            poller.get_job("busy", probe)

    threads = [threading.Thread(target=poll) for _ in range(4)]
    for thread in threads:
        thread.start()
    answered, refused = [], []
    try:
        for _ in range(size(40, 200)):
            try:
                answered.append(client.submit("busy", items_job(1))["job_id"])
            except BatchdError as exc:
                refused.append(exc.status)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    run.stop(probe)
    stored = {job["job_id"] for job in client.list_jobs("busy", limit=10_000)} - {probe}
    for job_id in answered:
        run.wait(job_id)
    unanswered = stored - set(answered)
    figures.update(
        submissions=len(answered) + len(refused),
        refused=len(refused),
        refused_statuses=sorted(set(refused)),
        stored_but_refused=len(unanswered),
        their_status=sorted({run.status(j)["status"] for j in unanswered}),
    )
    assert refused == []
    assert unanswered == set()
