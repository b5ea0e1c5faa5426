"""Scenarios 4 and 7: poison batches, and faults inside on_job_complete."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

from tests.conftest import wait_for
from tests.faults.conftest import Scenario, StartScenario, batch_key, items_job, size
from tests.faults.probes import pid_alive, read_only


def test_poison_batches_are_dead_lettered_after_exactly_3_calls(
    scenario: StartScenario,
    figures: dict[str, Any],
    rng: random.Random,
) -> None:
    """4. A handler that raises on 1% of batches, max_receive_count = 3
    exactly 3 calls per poison batch and 1 per other batch; every poison batch dead-lettered
    with its error and traceback; completed_with_failures; on_job_complete once, after every
    batch is terminal.
    """
    total = size(300, 10_000)
    poison = sorted(rng.sample(range(total), total // 100))
    run = scenario("poison", max_workers=4)
    side = run.side
    started = time.monotonic()
    job_id = run.submit(items_job(total, workers=4, max_receive_count=3, config={"poison": poison}))
    final = run.wait(job_id, timeout=size(90, 600))
    elapsed = time.monotonic() - started
    calls = side.calls()
    poison_keys = {batch_key(job_id, item) for item in poison}
    dead = run.failed(job_id)
    hooks = side.of("hook")
    figures.update(
        batches=total,
        poison=len(poison),
        poison_calls=sum(calls[key] for key in poison_keys),
        other_calls=sum(n for key, n in calls.items() if key not in poison_keys),
        dead_lettered=len(dead),
        failed_attempts=final["batch_metrics"]["failed_attempts"],
        hook_runs=len(hooks),
        batches_per_s=round(total / elapsed),
    )
    assert final["status"] == "completed_with_failures", final
    assert final["batch_metrics"]["succeeded"] == total - len(poison)
    assert final["batch_metrics"]["failed"] == len(poison)
    assert final["batch_metrics"]["failed_attempts"] == 3 * len(poison)
    assert {calls[key] for key in poison_keys} == {3}
    assert len(calls) == total
    assert {n for key, n in calls.items() if key not in poison_keys} == {1}
    assert {d["batch_id"] for d in dead} == poison_keys and len(dead) == len(poison)
    for record in dead:
        assert record["attempts"] == 3
        assert record["error"] == f"ValueError: poison item {record['payload'][0]}"
        assert "raise ValueError" in record["traceback"]
    run.check_attempts(job_id, 3)
    (hook,) = hooks
    assert hook.extra == (str(total - len(poison)), str(len(poison)), "0", "0")
    assert hook.t > max(e.t for e in side.events() if e.event in ("call", "done"))
    assert len(side.of("hook-done")) == 1


def _hooked_job(total: int, hold: Path, rng: random.Random) -> dict[str, Any]:
    # Uneven batches and a retried poison batch: workers run out of work at different
    # moments, and the idle ones must not be handed the hook early.
    slow = rng.sample(range(total), max(1, total // 10))
    return items_job(
        total,
        workers=4,
        max_receive_count=2,
        config={"hook_hold": str(hold), "slow": slow, "slow_s": 0.3, "poison": [total - 1]},
    )


def _check_hook_runs(run: Scenario, job_id: str, total: int) -> None:
    events = run.side.events()
    hooks = [e for e in events if e.event == "hook"]
    last_batch = max(e.t for e in events if e.event in ("call", "done"))
    # Never before every batch is terminal: the hook saw final counts, and began after the
    # last handle_batch call ended.
    assert all(h.extra == (str(total - 1), "1", "0", "0") for h in hooks), hooks
    assert all(h.t > last_batch for h in hooks)
    # The final status was set once, across every daemon that ran the job.
    ended = [
        line
        for line in run.daemon.output().splitlines()
        if '"job ended"' in line and json.loads(line).get("jobID") == job_id
    ]
    assert len(ended) == 1, ended


def _end_time(run: Scenario, job_id: str) -> tuple[str, float]:
    with read_only(run.daemon) as conn:
        status, end_time = conn.execute(
            "SELECT status, end_time FROM jobs WHERE job_id = ?", (job_id,)
        ).fetchone()
    return status, end_time


def test_daemon_kill9_inside_on_job_complete(
    scenario: StartScenario,
    figures: dict[str, Any],
    rng: random.Random,
    tmp_path: Path,
) -> None:
    """7a. kill -9 of the daemon inside on_job_complete
    the hook never starts before every batch is terminal; it runs again after the
    restart; the job ends completed_with_failures once; after that nothing changes, even
    across another kill -9 and restart (the hook does not run a third time).
    """
    total = size(40, 1000)
    hold = tmp_path / "hold"
    hold.touch()
    run = scenario("hookd", max_workers=4)
    side, daemon = run.side, run.daemon
    job_id = run.submit(_hooked_job(total, hold, rng))
    wait_for(lambda: side.of("hook"), timeout=size(60, 300), what="on_job_complete to begin")
    time.sleep(rng.uniform(0, 0.3))
    during = run.status(job_id)
    daemon.kill()
    hold.unlink()
    killed_at = time.time()
    daemon.start()
    final = run.wait(job_id)
    _check_hook_runs(run, job_id, total)
    hooks = side.of("hook")
    ended = _end_time(run, job_id)
    # Once ended, a crash and a restart change nothing.
    daemon.kill()
    daemon.start()
    wait_for(
        lambda: run.status(job_id)["status"] == final["status"],
        what="status after the second restart",
    )
    figures.update(
        batches=total,
        status_during_hook=during["status"],
        hook_runs=len(hooks),
        hook_completions=len(side.of("hook-done")),
        rerun_after_restart_s=round(hooks[-1].t - killed_at, 3),
        final_status=final["status"],
    )
    assert during["status"] == "running"
    assert during["batch_metrics"]["succeeded"] == total - 1
    assert final["status"] == "completed_with_failures", final
    assert len(hooks) == 2 and hooks[1].t > killed_at
    assert len(side.of("hook-done")) == 1
    assert _end_time(run, job_id) == ended
    assert len(side.of("hook")) == 2
    run.check_attempts(job_id, 2)


def test_worker_kill_inside_on_job_complete(
    scenario: StartScenario,
    figures: dict[str, Any],
    rng: random.Random,
    tmp_path: Path,
) -> None:
    """7b. SIGKILL of the worker inside on_job_complete
    the hook never starts before every batch is terminal; a new worker runs it again;
    the job ends completed_with_failures once; no batch is charged for the death.
    """
    total = size(40, 1000)
    hold = tmp_path / "hold"
    hold.touch()
    run = scenario("hookw", max_workers=4)
    side = run.side
    job_id = run.submit(_hooked_job(total, hold, rng))
    (hook,) = wait_for(
        lambda: side.of("hook"), timeout=size(60, 300), what="on_job_complete to begin"
    )
    time.sleep(rng.uniform(0, 0.3))
    os.kill(hook.pid, signal.SIGKILL)
    killed_at = time.time()
    wait_for(lambda: not pid_alive(hook.pid), what="the hook's worker to die")
    hold.unlink()
    final = run.wait(job_id)
    _check_hook_runs(run, job_id, total)
    hooks = side.of("hook")
    figures.update(
        batches=total,
        hook_runs=len(hooks),
        hook_completions=len(side.of("hook-done")),
        rerun_after_kill_s=round(hooks[-1].t - killed_at, 3),
        final_status=final["status"],
        failed_attempts=final["batch_metrics"]["failed_attempts"],
    )
    assert final["status"] == "completed_with_failures", final
    assert len(hooks) == 2 and hooks[1].pid != hook.pid
    assert len(side.of("hook-done")) == 1
    # The poison batch's two attempts are the only charges: the hook's death cost nothing.
    assert final["batch_metrics"]["failed_attempts"] == 2
    run.check_attempts(job_id, 2)
