"""Scenarios 8 and 9: stop and timeout mid-run; SIGTERM drain with long batches in flight."""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from datetime import datetime
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.faults.conftest import Scenario, StartScenario, items_job, seconds, size
from tests.faults.probes import (
    batch_rows,
    failure_rows,
    kill_all,
    pid_reaped,
    processes_of_job,
    seq_of,
)


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _check_ended_quietly(
    run: Scenario, job_id: str, pids: set[int], ended: tuple[float, float]
) -> dict[str, Any]:
    """Workers reaped, no process of the job left, no lease, and nothing changed since."""
    side = run.side
    snapshot = run.status(job_id)
    reaped_at = time.monotonic()
    wait_for(lambda: all(pid_reaped(pid) for pid in pids), what="the job's workers reaped")
    reap_s = seconds(reaped_at)
    assert processes_of_job(job_id, pids) == []
    assert not run.workers()
    after = run.status(job_id)
    assert after["batch_metrics"] == snapshot["batch_metrics"]
    assert after["status"] == snapshot["status"]
    assert after["batch_metrics"]["in_progress"] == 0
    rows = batch_rows(run.daemon, job_id)
    assert not [row for row in rows.values() if row.state == "leased" or row.lease_token]
    # Batches that finished after the end reported with a stale lease: nothing recorded.
    late = {e.key for e in side.of("done") if e.t > ended[1]}
    for key in late:
        assert rows[seq_of(key)].state == "queued", key
    # The calls under way at the end had their attempt refunded.
    cut = Counter(e.key for e in side.cut_off(*ended))
    assert set(late) <= set(cut)
    run.check_attempts(job_id, 3, refunded=cut)
    return {"workers_reaped_s": reap_s, "stale_outcomes_ignored": len(late), "cut_off": len(cut)}


def test_stop_mid_run(
    scenario: StartScenario,
    figures: dict[str, Any],
    rng: random.Random,
) -> None:
    """8a. Stop (DELETE) mid-run, workers that ignore SIGTERM, one of them hung
    stopped at once; 0 leases after; in-flight batches that finish later change nothing
    (stale token); the hung worker is killed after worker_stop_grace and every worker is
    reaped; no process of the job left.
    """
    workers, grace = 4, 3.0
    run = scenario("stopme", max_workers=workers, worker_stop_grace=grace)
    # One worker is stuck in a batch that never ends: it must be killed after the grace.
    job = items_job(
        size(40, 400),
        workers=workers,
        config={"delay": 1.0, "ignore_sigterm": True, "hang": [1]},
    )
    job_id = run.submit(job)
    run.wait_succeeded(job_id, size(3, 30), what="the job to be under way")
    time.sleep(rng.uniform(0, 1.0))
    pids = run.workers()
    asked, asked_at = time.monotonic(), time.time()
    run.stop(job_id)
    stopped_at = time.time()
    stop_s = seconds(asked)
    status = run.status(job_id)
    assert status["status"] == "stopped"
    assert status["batch_metrics"]["in_progress"] == 0
    quiet = _check_ended_quietly(run, job_id, pids, (asked_at, stopped_at))
    figures.update(stop_answer_s=stop_s, workers=len(pids), grace_s=grace, **quiet)
    assert grace - 0.5 <= quiet["workers_reaped_s"] <= grace + 2


def test_timeout_mid_run(
    scenario: StartScenario,
    figures: dict[str, Any],
) -> None:
    """8b. Job timeout mid-run, workers that ignore SIGTERM
    timed_out within about a second of the deadline; 0 leases after; late outcomes change
    nothing; workers reaped within worker_stop_grace; no process of the job left.
    """
    workers, grace, timeout = 4, 3.0, size(2.5, 10.0)
    run = scenario("timeme", max_workers=workers, worker_stop_grace=grace)
    job = items_job(
        size(40, 400),
        workers=workers,
        timeout=timeout,
        config={"delay": 0.7, "ignore_sigterm": True},
    )
    job_id = run.submit(job)
    wait_for(lambda: len(run.workers()) == workers, what="every worker to start")
    pids = run.workers()
    final = run.wait(job_id, timeout=timeout + 30)
    seen_at = time.time()
    lag = _epoch(final["end_time"]) - _epoch(final["start_time"]) - timeout
    end = _epoch(final["end_time"])
    quiet = _check_ended_quietly(run, job_id, pids, (end - 0.05, end + 0.05))
    figures.update(
        timeout_s=timeout,
        ended_after_deadline_s=round(lag, 3),
        seen_after_deadline_s=round(seen_at - _epoch(final["start_time"]) - timeout, 3),
        succeeded_before=final["batch_metrics"]["succeeded"],
        **quiet,
    )
    assert final["status"] == "timed_out"
    assert final["error"] == f"timed out after {timeout:g}s"
    assert 0 <= lag <= 1.5
    assert quiet["workers_reaped_s"] <= grace + 2


@pytest.mark.parametrize("end", ["stop", "daemon_kill9"])
def test_no_process_the_handler_started_survives(
    scenario: StartScenario,
    figures: dict[str, Any],
    end: str,
) -> None:
    """8c. Stop, or kill -9 of the daemon, while handle_batch runs a subprocess of its own
    no process of the job survives (the handler's children included).
    """
    run = scenario("spawner", max_workers=2, worker_stop_grace=1.0)
    job_id = run.submit(items_job(2, workers=2, config={"spawn": [0, 1]}))
    wait_for(lambda: len(run.side.of("call")) == 2, what="both batches to start")
    # Two workers, their two children, and each worker's process-group guard.
    wait_for(lambda: len(run.workers()) == 2, what="both workers")
    pids = run.workers()
    wait_for(lambda: len(processes_of_job(job_id, pids)) == 6, what="the handlers' children")
    try:
        if end == "stop":
            run.stop(job_id)
            wait_for(lambda: all(pid_reaped(pid) for pid in pids), what="workers reaped")
        else:
            run.daemon.kill()
            wait_for(lambda: all(pid_reaped(pid) for pid in pids), what="workers gone")
        # The daemon kills a worker's process group when it reaps the worker, a moment
        # after the worker's own exit (and the guard does, with no daemon): wait for that.
        wait_for(
            lambda: processes_of_job(job_id, pids) == [],
            timeout=10,
            what=f"the handlers' children to die ({processes_of_job(job_id, pids)} left)",
        )
        figures[f"processes_left_after_{end}"] = len(processes_of_job(job_id, pids))
    finally:
        kill_all(processes_of_job(job_id, pids))


@pytest.mark.parametrize("variant", ["finish", "cut"])
def test_sigterm_drain_with_long_batches_in_flight(
    scenario: StartScenario,
    figures: dict[str, Any],
    rng: random.Random,
    variant: str,
) -> None:
    """9. SIGTERM drain with long batches in flight (finish: grace > batch; cut: grace < batch)
    the daemon exits 0; in-flight batches finish and are recorded, or are cut off and
    released with the attempt refunded; no lease left, no attempt burned, no failure row;
    the job completes after the restart with every batch succeeded once.
    """
    workers, batch_s = size(2, 4), size(1.5, 3.0)
    grace = batch_s * 4 if variant == "finish" else 0.5
    total = workers * size(3, 6)
    run = scenario("drain", max_workers=workers, worker_stop_grace=grace)
    daemon, side = run.daemon, run.side
    job_id = run.submit(items_job(total, workers=workers, config={"delay": batch_s}))
    wait_for(
        lambda: (
            run.status(job_id)["batch_metrics"]["in_progress"] == workers
            and len(side.of("call")) >= workers
        ),
        what="every worker inside a batch",
    )
    time.sleep(rng.uniform(0, batch_s / 2))
    pids = run.workers()
    asked, asked_at = time.monotonic(), time.time()
    assert daemon.stop(signal.SIGTERM, timeout=grace + 30) == 0
    drain_s = seconds(asked)
    stopped_at = time.time()
    assert all(pid_reaped(pid) for pid in pids)
    # The daemon is down: what it left behind.
    rows = batch_rows(daemon, job_id)
    in_flight = side.cut_off(asked_at, asked_at)
    finished = {e.key for e in side.of("done") if asked_at <= e.t <= stopped_at}
    assert not [row for row in rows.values() if row.state == "leased" or row.lease_token]
    assert failure_rows(daemon, job_id) == {}
    for call in in_flight:
        row = rows[seq_of(call.key)]
        if call.key in finished:
            assert (row.state, row.attempts) == ("succeeded", 1), (call.key, row)
        else:
            assert (row.state, row.attempts) == ("queued", 0), (call.key, row)
    if variant == "finish":
        assert {c.key for c in in_flight} <= finished
    else:
        assert not finished & {c.key for c in in_flight}

    daemon.start()
    final = run.wait(job_id, timeout=size(60, 180))
    calls = side.calls()
    figures.update(
        grace_s=grace,
        batch_s=batch_s,
        in_flight=len(in_flight),
        finished_in_drain=len(finished),
        released=len(in_flight) - len(finished & {c.key for c in in_flight}),
        drain_s=drain_s,
        failed_attempts=final["batch_metrics"]["failed_attempts"],
        reruns=sum(calls.values()) - total,
    )
    assert final["status"] == "succeeded", final
    assert final["batch_metrics"]["succeeded"] == total
    assert final["batch_metrics"]["failed_attempts"] == 0
    rows = batch_rows(daemon, job_id)
    assert {(row.state, row.attempts) for row in rows.values()} == {("succeeded", 1)}
    released = {c.key for c in in_flight} - finished
    assert {key for key, n in calls.items() if n > 1} == released
    assert all(calls[key] == 2 for key in released)
    assert len(side.of("hook")) == 1
