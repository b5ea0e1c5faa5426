"""Several daemons on one PostgreSQL queue, as a user sees them: a job submitted to one
node runs on every node's workers, each node shows the same status, a stop given to any
node ends the job everywhere, and on_job_complete runs once across the cluster.

The fault runs (a node killed, stopped, cut off; PostgreSQL restarted) are in
tests/faults/."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests import pg
from tests.conftest import Daemon, wait_for, wait_job

Project = Callable[..., Path]

HANDLER = """
import os, time

class Handler:
    def __init__(self, config):
        self.node = os.environ["BATCHD_TEST_NODE"]
        self.hook_log = config.get("hook_log")
        self.pause = config.get("pause", 0.05)

    def handle_batch(self, payload, batch_id):
        time.sleep(self.pause)
        return {"item": payload[0], "node": self.node}

    def on_job_complete(self):
        with open(self.hook_log, "a") as out:
            out.write(self.node + "\\n")
"""


@pytest.fixture
def dsn(postgres_cluster: pg.Cluster) -> Iterator[str]:
    with postgres_cluster.fresh_schema() as fresh:
        yield fresh


@pytest.fixture
def nodes(
    make_daemon: Callable[..., Daemon], make_project: Project, dsn: str, tmp_path: Path
) -> Callable[..., list[Daemon]]:
    """Start `count` daemons on one schema, `work` deployed on the first."""

    def start(count: int, max_workers: int = 2, **config: Any) -> list[Daemon]:
        hook_log = tmp_path / "hook.log"
        project = make_project("work", HANDLER, config={"hook_log": str(hook_log), **config})
        daemons = []
        for index in range(count):
            daemon = make_daemon(
                start=False,
                database=dsn,
                node_name=f"node-{index}",
                node_timeout=5.0,
                max_workers=max_workers,
            )
            daemon.env["BATCHD_TEST_NODE"] = f"node-{index}"
            daemons.append(daemon)
        first = daemons[0]
        first.start()
        first.client.deploy(project)
        for daemon in daemons[1:]:
            # Each fetches the project from the database when it first needs it.
            daemon.start()
        return daemons

    return start


def _items(count: int) -> dict[str, Any]:
    return {"workers": 4, "item_list": {"items": list(range(count)), "batch_size": 1}}


def test_a_job_submitted_to_one_node_runs_on_both_and_reads_the_same_everywhere(
    nodes: Callable[..., list[Daemon]], tmp_path: Path, dsn: str
) -> None:
    first, second = nodes(2)
    job_id = first.client.submit("work", _items(60))["job_id"]
    done = wait_job(second.client, "work", job_id)
    assert done["status"] == "succeeded"
    assert done["batch_metrics"]["succeeded"] == 60
    assert (
        first.client.get_job("work", job_id)["job_status"]["batch_metrics"] == done["batch_metrics"]
    )
    results = {r["batch_id"]: r["result"] for r in second.client.results("work", job_id)}
    assert sorted(results) == sorted(f"{job_id}-{n}" for n in range(1, 61))
    assert sorted(r["item"] for r in results.values()) == list(range(60))
    by_node = {r["node"] for r in results.values()}
    # Each node's two workers took a share of the job's four.
    assert by_node == {"node-0", "node-1"}
    # on_job_complete ran once, on one of them.
    assert len((tmp_path / "hook.log").read_text().splitlines()) == 1
    # An operator sees which node holds which session.
    names = {row[0] for row in _query(dsn, "SELECT application_name FROM pg_stat_activity")}
    assert {"batchd node-0", "batchd node-1"} <= names


def test_a_stop_given_to_another_node_ends_the_job_everywhere(
    nodes: Callable[..., list[Daemon]],
) -> None:
    first, second = nodes(2, pause=0.5)
    job_id = first.client.submit("work", _items(400))["job_id"]

    def working_on_both() -> bool:
        return all(
            d.client.get_job("work", job_id)["job_status"]["worker_counts"]["running"]
            for d in (first, second)
        )

    wait_for(working_on_both, what="workers of the job on both nodes")
    second.client.stop_job("work", job_id)
    for daemon in (first, second):
        status = wait_job(daemon.client, "work", job_id, timeout=30)
        assert status["status"] == "stopped"

    def no_workers_left() -> bool:
        return not any(d.client.status()["workers"] for d in (first, second))

    wait_for(no_workers_left, timeout=30, what="every node's workers to exit")
    metrics = first.client.get_job("work", job_id)["job_status"]["batch_metrics"]
    assert metrics["succeeded"] < 400


def test_a_node_that_joins_mid_job_takes_a_share(
    make_daemon: Callable[..., Daemon], nodes: Callable[..., list[Daemon]]
) -> None:
    (first,) = nodes(1, pause=0.1)
    job_id = first.client.submit("work", _items(200))["job_id"]
    wait_for(
        lambda: (
            first.client.get_job("work", job_id)["job_status"]["batch_metrics"]["succeeded"] > 10
        ),
        what="the first node under way",
    )
    late = make_daemon(start=False, database=first_database(first), node_name="node-late")
    late.env["BATCHD_TEST_NODE"] = "node-late"
    late.start()
    done = wait_job(late.client, "work", job_id)
    assert done["status"] == "succeeded"
    results = list(late.client.results("work", job_id))
    assert len(results) == 200
    assert {r["result"]["node"] for r in results} == {"node-0", "node-late"}


def _query(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    async def read() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(dsn)
        try:
            return [tuple(row) for row in await conn.fetch(sql)]
        finally:
            await conn.close()

    return asyncio.run(read())


def first_database(daemon: Daemon) -> str:
    import tomllib

    return str(tomllib.loads(daemon.config_path.read_text())["database"])
