"""What a fault scenario reads from outside the daemon: its processes (/proc) and its
database (SQLite, read-only), to hold batchd's own answers against."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testkit.launcher import children
from tests.conftest import Daemon

if TYPE_CHECKING:
    from tests.faults.conftest import SideFile

DB_FILENAME = "batchd.sqlite3"


# -- processes -------------------------------------------------------------------------


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def workers_of(daemon: Daemon) -> set[int]:
    """The daemon's live worker processes (not the spare waiting in its own directory)."""
    assert daemon.process is not None
    spare_home = daemon.state_dir / "runtime" / "spare"
    return {
        pid
        for pid in children(daemon.process.pid)
        if "batchd.worker" in cmdline(pid) and pid_alive(pid) and not _is_in(pid, spare_home)
    }


def _is_in(pid: int, directory: Path) -> bool:
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")) == directory.resolve()
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    """Running, not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def pid_reaped(pid: int) -> bool:
    """Gone from the process table: exited and waited for by its parent."""
    return not Path(f"/proc/{pid}").exists()


def processes_of_job(job_id: str, workers: Iterable[int] = ()) -> list[int]:
    """Live processes of the job: those whose environment names it (each worker started
    fresh, and whatever a handler started), and every process in the sessions its
    `workers` lead (a worker leads its own session; one that was a spare shows its
    start-up environment in /proc, so only its session tells)."""
    needle = f"BATCHD_JOB_ID={job_id}".encode()
    sessions = set(workers)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            environ = (entry / "environ").read_bytes()
            session = os.getsid(pid)
        except OSError:
            continue
        if (needle in environ.split(b"\0") or session in sessions) and pid_alive(pid):
            found.append(pid)
    return found


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# -- the database, read directly -------------------------------------------------------


def db_path(daemon: Daemon) -> Path:
    return daemon.state_dir / DB_FILENAME


@contextlib.contextmanager
def read_only(daemon: Daemon) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(f"file:{db_path(daemon)}?mode=ro", uri=True, timeout=30)
    try:
        yield conn
    finally:
        conn.close()


def integrity_check(daemon: Daemon) -> str:
    with read_only(daemon) as conn:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    return "; ".join(str(row[0]) for row in rows)


def job_range(key: int) -> tuple[int, int]:
    """A job's batch ids: its key in the high 32 bits, the batch's seq in the low."""
    return key << 32, (key << 32) | 0xFFFFFFFF


@dataclass(frozen=True)
class BatchRow:
    seq: int
    state: str
    attempts: int
    lease_token: int | None


def _job_rows(daemon: Daemon, job_id: str, query: str) -> list[Any]:
    """`query`'s rows for the job, its batch id range bound to the two parameters."""
    with read_only(daemon) as conn:
        (key,) = conn.execute("SELECT key FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return conn.execute(query, job_range(key)).fetchall()


def batch_rows(daemon: Daemon, job_id: str) -> dict[int, BatchRow]:
    rows = _job_rows(
        daemon,
        job_id,
        "SELECT id & 4294967295, state, attempts, lease_token FROM batches "
        "WHERE id BETWEEN ? AND ? ORDER BY id",
    )
    return {row[0]: BatchRow(*row) for row in rows}


def failure_rows(daemon: Daemon, job_id: str) -> dict[int, list[tuple[int, str]]]:
    """Per batch seq: (attempt, error) of every failed attempt."""
    rows = _job_rows(
        daemon,
        job_id,
        "SELECT batch & 4294967295, attempt, error FROM failures "
        "WHERE batch BETWEEN ? AND ? ORDER BY batch, attempt",
    )
    found: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for seq, attempt, error in rows:
        found[seq].append((attempt, error))
    return found


def seq_of(batch_id: str) -> int:
    return int(batch_id.rsplit("-", 1)[1])


def check_attempts(
    daemon: Daemon,
    job_id: str,
    side: SideFile,
    max_receive_count: int,
    refunded: Counter[str] | None = None,
) -> dict[int, BatchRow]:
    """Per batch: calls (side file) <= attempts (database) <= max_receive_count, and every
    attempt before the last is a recorded failure.

    `refunded` counts calls an operator (stop, timeout, drain) may have cut off: their attempt
    was given back, so they may exceed the attempts by that much. It is an upper bound: a call
    that finished just before the end was recorded and kept its attempt."""
    rows = batch_rows(daemon, job_id)
    failures = failure_rows(daemon, job_id)
    calls = side.calls()
    # The job's counters (what status reads) agree with its rows, whatever happened.
    states = Counter(row.state for row in rows.values())
    with read_only(daemon) as conn:
        counters = conn.execute(
            "SELECT queued_count, leased_count, succeeded_count, dead_count, failure_count, "
            "total_batch_count - materialized FROM jobs WHERE job_id = ?",
            (job_id,),
        ).fetchone()
    # Batches never leased have no row yet: they are queued in the job's chunks.
    assert counters[:5] == (
        states["queued"] + counters[5],
        states["leased"],
        states["succeeded"],
        states["dead"],
        sum(len(f) for f in failures.values()),
    ), counters
    for seq, row in rows.items():
        key = f"{job_id}-{seq}"
        ran = calls.get(key, 0) - (refunded or Counter()).get(key, 0)
        assert ran <= row.attempts <= max_receive_count, (seq, ran, row)
        failed = [attempt for attempt, _ in failures.get(seq, [])]
        if row.state == "succeeded":
            assert calls.get(key, 0) >= 1, f"batch {seq} succeeded without a recorded call"
            assert failed == list(range(1, row.attempts)), (seq, row, failed)
        elif row.state == "dead":
            assert failed == list(range(1, row.attempts + 1)), (seq, row, failed)
    return rows
