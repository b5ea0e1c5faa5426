"""Scenario 1: kill -9 of the daemon at random moments, during a job and during admission."""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections import Counter
from typing import Any

from batchd.client import BatchdError, Client
from batchd.constants import LEASE_TARGET_SECONDS
from tests.conftest import Daemon, wait_for
from tests.faults.conftest import RESTART_ERROR, StartScenario, items_job, seconds, size
from tests.faults.probes import failure_rows, integrity_check, pid_alive, read_only


def test_daemon_kill9_at_random_moments(
    scenario: StartScenario, figures: dict[str, Any], rng: random.Random
) -> None:
    """1a. kill -9 of the daemon at random moments over a multi-thousand-batch job
    lost = 0; succeeded = distinct succeeded = total; calls per batch in [1,
    max_receive_count] and <= attempts; every extra attempt is a restart charge (at most
    one grant per worker per kill);
    workers die with the daemon; PRAGMA integrity_check ok after every crash and at the end.
    """
    total, kills, workers = size(1000, 20_000), size(3, 15), 4
    max_receive_count = kills + 1
    run = scenario("kill9", sqlite_synchronous="full", max_workers=workers)
    daemon, side = run.daemon, run.side
    job = items_job(
        total, workers=workers, max_receive_count=max_receive_count, config={"delay": 0.002}
    )
    started = time.monotonic()
    job_id = run.submit(job)
    orphan_waits, restarts, progress = [], [], []
    for _ in range(kills):
        # The fault: a random moment, start-up and recovery included.
        time.sleep(rng.uniform(0.05, size(0.8, 3.0)))
        pids = run.kill_daemon()
        died = time.monotonic()
        wait_for(
            lambda pids=pids: not any(pid_alive(pid) for pid in pids),
            what="workers to die with the daemon",
        )
        orphan_waits.append(seconds(died))
        # The crash image itself is a sound database.
        assert integrity_check(daemon) == "ok"
        with read_only(daemon) as conn:
            progress.append(
                conn.execute("SELECT count(*) FROM batches WHERE state = 'succeeded'").fetchone()[0]
            )
        restarted = time.monotonic()
        daemon.start()
        restarts.append(seconds(restarted))
    final = run.wait(job_id, timeout=size(120, 900))
    elapsed = seconds(started)

    results = run.results(job_id)
    ids = Counter(row["batch_id"] for row in results)
    calls = side.calls()
    failures = failure_rows(daemon, job_id)
    charged = sum(len(f) for f in failures.values())
    figures.update(
        batches=total,
        kills=kills,
        succeeded_at_kills="/".join(str(n) for n in progress),
        lost=total - len(ids),
        double_counted=sum(n - 1 for n in ids.values()),
        calls=sum(calls.values()),
        reruns=sum(calls.values()) - len(calls),
        charged_attempts=charged,
        max_calls_per_batch=max(calls.values()),
        max_worker_death_s=max(orphan_waits),
        max_restart_s=max(restarts),
        job_s=elapsed,
    )
    assert final["status"] == "succeeded", final
    assert final["batch_metrics"]["succeeded"] == total
    assert final["batch_metrics"]["failed"] == 0
    assert len(ids) == total and sum(ids.values()) == total
    assert {row["batch_id"]: row["result"] for row in results} == {
        f"{job_id}-{i + 1}": [i] for i in range(total)
    }
    assert set(calls) == set(ids)
    assert all(1 <= n <= max_receive_count for n in calls.values())
    rows = run.check_attempts(job_id, max_receive_count)
    assert all(row.state == "succeeded" for row in rows.values())
    # Only restarts charged attempts, at most a grant per worker per kill (every batch
    # leased when the daemon died may have run); every re-run is charged.
    assert {error for f in failures.values() for _, error in f} <= {RESTART_ERROR}
    assert charged == final["batch_metrics"]["failed_attempts"]
    grant = math.ceil(LEASE_TARGET_SECONDS / 0.002)
    assert charged <= kills * workers * grant
    assert sum(calls.values()) - total <= charged
    hooks = side.of("hook")
    assert hooks and all(h.extra == (str(total), "0", "0", "0") for h in hooks)
    assert len(side.of("hook-done")) >= 1

    assert daemon.stop() == 0
    figures["integrity_check"] = integrity_check(daemon)
    assert figures["integrity_check"] == "ok"


def admitted_batches(daemon: Daemon, job_id: str) -> int:
    """Batches stored for a job: those with rows, and those still only in its chunks."""
    with read_only(daemon) as conn:
        chunks = conn.execute(
            "SELECT c.payloads FROM chunks c JOIN jobs j ON c.id >> 32 = j.key "
            "WHERE j.job_id = ? ORDER BY c.id",
            (job_id,),
        ).fetchall()
    return sum(len(json.loads(chunk)) for (chunk,) in chunks)


def test_daemon_kill9_during_admission(
    scenario: StartScenario, figures: dict[str, Any], rng: random.Random
) -> None:
    """1b. kill -9 of the daemon while a large POST is being admitted
    after the restart the job exists with every batch or not at all; a 2xx answer means
    it exists; no batch row without its job; PRAGMA integrity_check ok.
    """
    items, rounds = size(60_000, 300_000), size(3, 10)
    run = scenario("admit", sqlite_synchronous="full")
    daemon, client = run.daemon, run.client
    body = json.dumps(items_job(items, workers=1, config={"results": False})).encode()

    started = time.monotonic()
    first = client.submit("admit", body)
    admit_s = seconds(started)
    client.stop_job("admit", first["job_id"])
    known = {first["job_id"]}
    outcomes: Counter[str] = Counter()
    for round_ in range(rounds):
        # Half the kills anywhere in the request, half near its end where the commit is.
        low = 0.0 if round_ % 2 == 0 else 0.7 * admit_s
        delay = rng.uniform(low, 1.1 * admit_s)
        answer: dict[str, Any] = {}

        def post(answer: dict[str, Any] = answer) -> None:
            try:
                answer["spec"] = Client(daemon.url, timeout=120).submit("admit", body)
            except BatchdError as exc:
                answer["error"] = exc

        poster = threading.Thread(target=post)
        poster.start()
        time.sleep(delay)
        daemon.kill()
        poster.join(120)
        assert not poster.is_alive()
        assert integrity_check(daemon) == "ok"
        daemon.start()

        jobs = {job["job_id"]: job for job in client.list_jobs("admit", limit=1000)}
        new = set(jobs) - known
        assert len(new) <= 1, new
        if "spec" in answer:
            assert new == {answer["spec"]["job_id"]}, "a 2xx answer but no job after restart"
        for job_id in new:
            assert jobs[job_id]["total_batch_count"] == items
            assert admitted_batches(daemon, job_id) == items
            if run.status(job_id)["status"] == "running":
                client.stop_job("admit", job_id)
        outcomes["answered" if "spec" in answer else "stored" if new else "absent"] += 1
        known |= new

    with read_only(daemon) as conn:
        orphans = conn.execute(
            "SELECT (SELECT count(*) FROM batches WHERE id >> 32 NOT IN (SELECT key FROM jobs))"
            " + (SELECT count(*) FROM chunks WHERE id >> 32 NOT IN (SELECT key FROM jobs))"
        ).fetchone()[0]
        totals = conn.execute("SELECT job_id, total_batch_count FROM jobs").fetchall()
    # A job's payloads are admitted in chunks: all of them or none.
    partial = sum(admitted_batches(daemon, job_id) != total for job_id, total in totals)
    figures.update(
        items=items,
        admission_s=admit_s,
        kills=rounds,
        answered=outcomes["answered"],
        stored_unanswered=outcomes["stored"],
        absent=outcomes["absent"],
        orphan_batch_rows=orphans,
        partial_jobs=partial,
    )
    assert orphans == 0
    assert partial == 0
    assert daemon.stop() == 0
    figures["integrity_check"] = integrity_check(daemon)
    assert figures["integrity_check"] == "ok"
