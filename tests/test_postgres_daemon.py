"""A daemon whose queue is on PostgreSQL: deploy, a job with a dead-lettered batch, its
results, and the same job after a restart. Nothing of the queue is in the state dir."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from batchd.constants import DB_FILENAME
from batchd.daemon.run import EXIT_START_FAILED
from testkit.launcher import LaunchError
from tests import pg
from tests.conftest import Daemon, wait_job

Project = Callable[..., Path]

HANDLER = """
class Handler:
    def __init__(self, config):
        pass

    def handle_batch(self, payload, batch_id):
        item = payload[0]
        if item == "bad":
            raise ValueError(f"cannot handle {item}")
        return item.upper()
"""


@pytest.fixture
def dsn(postgres_cluster: pg.Cluster) -> Iterator[str]:
    with postgres_cluster.fresh_schema() as fresh:
        yield fresh


def _jobs_in(dsn: str) -> list[tuple[str, str]]:
    async def read() -> list[tuple[str, str]]:
        conn = await asyncpg.connect(dsn)
        try:
            return [tuple(row) for row in await conn.fetch("SELECT job_id, status FROM jobs")]
        finally:
            await conn.close()

    return asyncio.run(read())


def test_a_daemon_on_postgresql_keeps_its_jobs_across_a_restart(
    make_daemon: Callable[..., Daemon], make_project: Project, dsn: str, tmp_path: Path
) -> None:
    # The URL, password and all, is in a file of its own (a systemd credential, say).
    secret = tmp_path / "database.url"
    secret.write_text(dsn + "\n", encoding="utf-8")
    daemon = make_daemon(database_file=str(secret))
    client = daemon.client
    assert client.deploy(make_project("upper", HANDLER))["version"] == 1
    job = client.submit(
        "upper",
        {
            "workers": 2,
            "item_list": {"items": ["a", "bad", "c"], "batch_size": 1},
            "sqs_dead_letter_queue": {"arn": "ignored", "max_receive_count": 2},
        },
    )
    job_id = job["job_id"]
    status = wait_job(client, "upper", job_id)
    assert status["status"] == "completed_with_failures"
    metrics = status["batch_metrics"]
    assert (metrics["succeeded"], metrics["failed"], metrics["failed_attempts"]) == (2, 1, 2)
    results = sorted((r["batch_id"], r["result"]) for r in client.results("upper", job_id))
    assert results == [(f"{job_id}-1", "A"), (f"{job_id}-3", "C")]
    (dead,) = client.failed("upper", job_id)
    assert (dead["batch_id"], dead["payload"], dead["attempts"]) == (f"{job_id}-2", ["bad"], 2)
    assert dead["error"] == "ValueError: cannot handle bad"
    # The queue is the database's, not a SQLite file's.
    assert _jobs_in(dsn) == [(job_id, "completed_with_failures")]
    assert not (daemon.state_dir / DB_FILENAME).exists()

    daemon.restart()
    client = daemon.client
    again = client.get_job("upper", job_id)
    assert again["job_status"]["status"] == "completed_with_failures"
    assert again["job_status"]["batch_metrics"] == metrics
    assert sorted((r["batch_id"], r["result"]) for r in client.results("upper", job_id)) == results
    assert [d["batch_id"] for d in client.failed("upper", job_id)] == [f"{job_id}-2"]
    # Admission still works after the restart, on the same queue.
    second = client.submit("upper", {"workers": 1, "item_list": {"items": ["z"], "batch_size": 1}})
    assert wait_job(client, "upper", second["job_id"])["status"] == "succeeded"
    assert sorted(_jobs_in(dsn)) == sorted(
        [(job_id, "completed_with_failures"), (second["job_id"], "succeeded")]
    )


def test_a_daemon_that_cannot_reach_its_database_exits_naming_it(
    make_daemon: Callable[..., Daemon], postgres_cluster: pg.Cluster
) -> None:
    wrong = postgres_cluster.dsn.replace(postgres_cluster.password, "not-the-password")
    daemon = make_daemon(start=False, database=wrong)
    with pytest.raises(LaunchError, match=f"batchd exited {EXIT_START_FAILED}:"):
        daemon.start(timeout=30)
    output = daemon.output()
    assert "error: database: cannot connect to postgresql://batchd_tests:***@127.0.0.1" in output
    assert "not-the-password" not in output
