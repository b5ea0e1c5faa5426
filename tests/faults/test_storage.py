"""Scenarios 10 and 11: the disk fills while workers run; a long reader holds the WAL."""

from __future__ import annotations

import contextlib
import sqlite3
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from batchd.client import TERMINAL_STATUSES, BatchdError
from tests.conftest import Daemon, wait_for
from tests.faults.conftest import StartScenario, items_job, seconds, size
from tests.faults.probes import db_path, failure_rows, integrity_check, pid_reaped


@pytest.fixture
def tiny_fs(make_tiny_fs: Callable[[int], Path]) -> Path:
    return make_tiny_fs(32)


def healthy(daemon: Daemon) -> bool:
    with urllib.request.urlopen(daemon.url + "/healthz", timeout=30) as response:
        return bool(response.status == 200)


@contextlib.contextmanager
def disk_full(daemon: Daemon, mount: Path) -> Iterator[None]:
    """Fill the filesystem holding the state to the last byte.

    A read transaction is held open meanwhile: SQLite cannot restart its WAL from the
    beginning past a reader, so every write needs new space and fails, whatever the
    WAL's size happened to be."""
    reader = sqlite3.connect(f"file:{db_path(daemon)}?mode=ro", uri=True, isolation_level=None)
    filler = mount / "filler"
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM batches").fetchone()
        with contextlib.suppress(OSError), filler.open("wb") as out:
            while True:
                out.write(b"\0" * (1 << 20))
        with contextlib.suppress(OSError), filler.open("ab") as out:
            while True:
                out.write(b"\0" * 4096)
                out.flush()
        yield
    finally:
        filler.unlink(missing_ok=True)
        reader.close()


def storage_errors(daemon: Daemon) -> int:
    return daemon.output().count("database or disk is full")


def test_disk_fills_while_workers_run(
    scenario: StartScenario,
    figures: dict[str, Any],
    tiny_fs: Path,
) -> None:
    """10a. The disk holding the state fills up while workers run
    the daemon keeps answering status requests; once space is back the job completes
    with every batch succeeded once (none lost, none double-counted); the database is
    sound.
    """
    total, workers = size(400, 3000), 4
    run = scenario(
        "diskfull",
        state_dir=tiny_fs / "state",
        max_workers=workers,
        lease_timeout=3.0,
        max_worker_restarts=1000,
    )
    daemon = run.daemon
    job = items_job(total, workers=workers, max_receive_count=10, config={"delay": 0.01})
    job_id = run.submit(job)
    run.wait_succeeded(job_id, total // 5, what="the job to be under way")
    answered = 0
    with disk_full(daemon, tiny_fs):
        full_at = time.monotonic()
        before = run.succeeded(job_id)
        wait_for(lambda: storage_errors(daemon) > 0, what="writes to fail")
        # While the disk is full the daemon keeps answering.
        while time.monotonic() - full_at < size(2.0, 10.0):
            assert healthy(daemon)
            during = run.succeeded(job_id)
            answered += 1
    freed = time.monotonic()
    final = run.wait(job_id, timeout=size(90, 300))
    recovered_s = seconds(freed)
    results = run.results(job_id)
    figures.update(
        batches=total,
        succeeded_when_filled=before,
        succeeded_while_full=during - before,
        status_answers_while_full=answered,
        storage_errors_logged=storage_errors(daemon),
        worker_deaths_logged=daemon.output().count('"worker died"'),
        failed_attempts=final["batch_metrics"]["failed_attempts"],
        recovery_s=recovered_s,
    )
    run.check_each_batch_succeeded_once(job_id, final, results, total)
    run.check_attempts(job_id, 10)
    assert daemon.stop() == 0
    assert integrity_check(daemon) == "ok"


def test_full_disk_is_not_blamed_on_workers(
    scenario: StartScenario,
    figures: dict[str, Any],
    tiny_fs: Path,
) -> None:
    """10b. A full disk is not blamed on the workers
    no worker is killed, no batch charged, nothing reported out of memory because the
    daemon could not write; the job completes once space is back.
    """
    run = scenario(
        "blame",
        state_dir=tiny_fs / "state",
        max_workers=2,
        lease_timeout=3.0,
        max_worker_restarts=100,
    )
    daemon = run.daemon
    job_id = run.submit(items_job(200, workers=2, config={"delay": 0.01}))
    wait_for(lambda: len(run.side.of("done")) >= 10, what="the job to be under way")
    with disk_full(daemon, tiny_fs):
        wait_for(lambda: storage_errors(daemon) > 0, what="writes to fail")
        wait_for(
            lambda: "cannot write to the queue; retrying" in daemon.output(),
            what="a worker's outcome to wait for space",
        )
    final = run.wait(job_id, timeout=60)
    log = daemon.output()
    figures.update(
        worker_deaths_logged=log.count('"worker died"'),
        reported_oom=log.count("OOM killer"),
        failed_attempts=final["batch_metrics"]["failed_attempts"],
        final_status=final["status"],
    )
    assert final["status"] == "succeeded", final
    assert '"worker died"' not in log
    assert failure_rows(daemon, job_id) == {}


def test_stop_refused_by_a_full_disk_can_be_retried(
    scenario: StartScenario,
    figures: dict[str, Any],
    tiny_fs: Path,
) -> None:
    """10c. A stop refused with 507 while the disk is full
    the job is still running and stoppable once space is back: a retried stop answers 200,
    the job ends stopped and its workers are reaped.
    """
    run = scenario("stuck", state_dir=tiny_fs / "state", max_workers=2, worker_stop_grace=1.0)
    job_id = run.submit(items_job(2, workers=2, config={"hang": [0, 1]}))
    wait_for(lambda: len(run.side.of("call")) == 2, what="both batches to start")
    pids = run.workers()
    with disk_full(run.daemon, tiny_fs), pytest.raises(BatchdError) as refused:
        run.stop(job_id)
    figures["first_stop"] = refused.value.status
    assert refused.value.status == 507
    try:
        answer = run.stop(job_id)
    except BatchdError as exc:
        figures["retried_stop"] = f"{exc.status} {exc.message}"
        raise
    figures["retried_stop"] = answer["message"]
    assert run.status(job_id)["status"] == "stopped"
    wait_for(lambda: all(pid_reaped(pid) for pid in pids), what="workers reaped")


def wal_size(daemon: Daemon) -> int:
    wal = Path(str(db_path(daemon)) + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def test_long_reader_during_a_job(
    scenario: StartScenario,
    figures: dict[str, Any],
) -> None:
    """11. A long reader holds a read transaction (sqlite3, open SELECT) while a job runs
    no "database is locked" error, no 503; the job completes; the reader's snapshot holds;
    the WAL grows past it, and (full run) shrinks once the daemon checkpoints after the
    reader ends (checkpoint_interval, set to 10 s here).
    """
    checkpoint_interval = 10.0
    # Enough batches to write well over a MiB of WAL (a batch writes a few hundred bytes).
    total = size(3_000, 10_000)
    # lease_timeout sets how often the daemon's maintenance loop (and checkpoint) looks.
    run = scenario(
        "reader", max_workers=4, lease_timeout=3.0, checkpoint_interval=checkpoint_interval
    )
    daemon = run.daemon
    reader = sqlite3.connect(f"file:{db_path(daemon)}?mode=ro", uri=True, isolation_level=None)
    try:
        reader.execute("BEGIN")
        (before,) = reader.execute("SELECT count(*) FROM batches").fetchone()
        job_id = run.submit(items_job(total, workers=4))
        wal_max = 0

        def done() -> bool:
            nonlocal wal_max
            wal_max = max(wal_max, wal_size(daemon))
            return run.status(job_id)["status"] in TERMINAL_STATUSES

        started = time.monotonic()
        wait_for(done, timeout=size(90, 600), what="the job to end")
        job_s = seconds(started)
        final = run.status(job_id)
        # The reader still sees its snapshot: the transaction was held all along.
        (still,) = reader.execute("SELECT count(*) FROM batches").fetchone()
        assert still == before
    finally:
        reader.close()
    log = daemon.output()
    figures.update(
        batches=total,
        job_s=job_s,
        batches_per_s=round(total / job_s),
        wal_max_kib=wal_max // 1024,
        locked_errors=log.count("database is locked"),
        busy_errors=log.count("queue is busy"),
    )
    assert final["status"] == "succeeded", final
    assert final["batch_metrics"]["succeeded"] == total
    assert "database is locked" not in log
    assert "queue is busy" not in log
    assert wal_max > 1024 * 1024
    run.check_attempts(job_id, 3)
    if not size(False, True):
        figures["wal_after_reader"] = "not waited in short runs"
        return
    # The daemon truncates the WAL every checkpoint_interval seconds.
    closed = time.monotonic()
    deadline = checkpoint_interval + 60
    wait_for(lambda: wal_size(daemon) < 64 * 1024, timeout=deadline, what="the WAL to shrink")
    figures.update(
        wal_after_checkpoint_kib=wal_size(daemon) // 1024,
        shrank_after_reader_closed_s=seconds(closed),
    )
