"""Job logs on PostgreSQL: two daemons on one database, a job run on A, its log read and
followed from B, the 5 MB line rule as on SQLite, pruning; and the write queue that keeps
lines while the database cannot take them, bounded, and stores them at the stop."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from batchd.constants import MAX_LOG_LINE_BYTES
from batchd.observe.joblogs import LogRead, encode_record, guarded_writer
from batchd.observe.pglogs import PostgresJobLogs
from batchd.store.postgres.store import PostgresStore
from tests import pg
from tests.conftest import Daemon, wait_for, wait_job
from tests.store.support import running_job
from tests.test_logs import fetch_logs, gated_logging_handler
from tests.test_retention import post

Project = Callable[..., Path]

LINES_PER_BATCH = 40

HANDLER = f"""
from batchd import logger

class Handler:
    def __init__(self, config):
        logger.info("initialised")

    def handle_batch(self, payload, batch_id):
        item = payload[0]
        if item == "huge":
            logger.info("x" * (6 * 1024 * 1024))
        for n in range({LINES_PER_BATCH}):
            logger.info(item + " line " + str(n), extra={{"n": n}})
        if item == "fail":
            logger.error("giving up on " + item)
            raise ValueError("no good")
        return item
"""

ITEMS = ["a", "huge", "fail"]


@pytest.fixture
def dsn(postgres_cluster: pg.Cluster) -> Iterator[str]:
    with postgres_cluster.fresh_schema() as fresh:
        yield fresh


def _sql(dsn: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    async def run() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(dsn)
        try:
            return [tuple(row) for row in await conn.fetch(query, *args)]
        finally:
            await conn.close()

    return asyncio.run(run())


def _run_job(daemon: Daemon, make_project: Project) -> str:
    client = daemon.client
    client.deploy(make_project("logging", HANDLER))
    job = client.submit(
        "logging",
        {"workers": 1, "max_receive_count": 1, "item_list": {"items": ITEMS, "batch_size": 1}},
    )
    assert wait_job(client, "logging", job["job_id"])["status"] == "completed_with_failures"
    return str(job["job_id"])


def _complete_log(daemon: Daemon, job_id: str) -> list[dict[str, Any]]:
    """The job's records once all of them are readable (lines reach the table a flush
    after they are written)."""
    return wait_for(
        lambda: (
            (records := fetch_logs(daemon, "logging", job_id))
            and any(r["message"] == "handle_batch failed" for r in records)
            and records
        ),
        what="the job's whole log",
    )


def _logged(records: list[dict[str, Any]]) -> list[str]:
    """The messages of the handler's logger (not the worker's output streams), in order."""
    return [r["message"] for r in records if "stream" not in r]


def test_a_job_run_on_one_daemon_has_its_log_read_and_pruned_from_another(
    make_daemon: Callable[..., Daemon], make_project: Project, dsn: str
) -> None:
    node_a = make_daemon(database=dsn, node_name="node-a")
    job_id = _run_job(node_a, make_project)
    # Started once the job has ended on A: none of its lines can be B's own.
    node_b = make_daemon(database=dsn, node_name="node-b")

    records = _complete_log(node_b, job_id)
    # One log, the same in one order from either node, and none of it in a state dir.
    assert fetch_logs(node_a, "logging", job_id) == records
    assert not (node_a.state_dir / "logs").exists() and not (node_b.state_dir / "logs").exists()
    lines = _sql(dsn, "SELECT node, line FROM job_logs ORDER BY id")
    assert [json.loads(line) for _, line in lines] == records
    assert {node for node, _ in lines} == {"node-a"}

    over = f"log record dropped: over {MAX_LOG_LINE_BYTES} bytes"
    assert _logged(records) == [
        "initialised",
        *(f"a line {n}" for n in range(LINES_PER_BATCH)),
        over,
        *(f"huge line {n}" for n in range(LINES_PER_BATCH)),
        *(f"fail line {n}" for n in range(LINES_PER_BATCH)),
        "giving up on fail",
        "handle_batch failed",
    ]
    base = {"apiName": "logging", "jobID": job_id, "workerSlot": 0, "node": "node-a"}
    (initialised,) = [r for r in records if r["message"] == "initialised"]
    assert initialised["labels"] == base
    for seq, item in enumerate(ITEMS, start=1):
        mine = [r for r in records if r["message"].startswith(f"{item} line ")]
        assert [r["n"] for r in mine] == list(range(LINES_PER_BATCH))
        assert all(r["labels"] == {**base, "batchID": f"{job_id}-{seq}"} for r in mine)
    (dropped,) = [r for r in records if r["message"] == over]
    assert dropped["levelname"] == "WARNING" and dropped["labels"]["batchID"] == f"{job_id}-2"
    assert not any(len(r["message"]) > 1024 * 1024 for r in records)

    # The same job on SQLite logs the same records: the line rule is the same.
    on_sqlite = make_daemon()
    sqlite_records = _complete_log(on_sqlite, _run_job(on_sqlite, make_project))
    assert _logged(sqlite_records) == _logged(records)

    # Filters and tail, served by B.
    errors = fetch_logs(node_b, "logging", job_id, level="ERROR")
    assert [r["message"] for r in errors] == ["giving up on fail", "handle_batch failed"]
    second = f"{job_id}-2"
    by_batch = list(node_b.client.stream_job_logs("logging", job_id, batch_id=second))
    assert by_batch == [r for r in records if r["labels"].get("batchID") == second]
    assert fetch_logs(node_b, "logging", job_id, tail="3") == records[-3:]
    assert fetch_logs(node_b, "logging", job_id, tail=str(len(records) + 5)) == records

    # Pruning from B takes the lines of the old job only.
    kept = node_a.client.submit("logging", {"item_list": {"items": ["k"], "batch_size": 1}})
    assert wait_job(node_a.client, "logging", kept["job_id"])["status"] == "succeeded"
    kept_lines = wait_for(
        lambda: (
            len(fetch_logs(node_b, "logging", kept["job_id"])) == LINES_PER_BATCH + 1
            and _lines_of(dsn, kept["job_id"])
        ),
        what="the kept job's lines",
    )
    size = sum(len(line) for _, line in lines)
    _sql(dsn, "UPDATE jobs SET end_time = end_time - 100 * 86400 WHERE job_id = $1", job_id)
    planned = post(node_b, "/admin/prune?dryRun=true")
    assert (planned["jobs"], planned["log_bytes"]) == ([job_id], size)
    assert _lines_of(dsn, job_id) == len(records)
    report = post(node_b, "/admin/prune")
    assert (report["jobs"], report["log_bytes"]) == ([job_id], size)
    assert _lines_of(dsn, job_id) == 0
    assert _lines_of(dsn, kept["job_id"]) == kept_lines


def _lines_of(dsn: str, job_id: str) -> int:
    query = "SELECT count(*) FROM job_logs JOIN jobs ON job = key WHERE job_id = $1"
    return int(_sql(dsn, query, job_id)[0][0])


def test_follow_from_another_daemon_sees_lines_as_they_are_written(
    make_daemon: Callable[..., Daemon], make_project: Project, dsn: str, tmp_path: Path
) -> None:
    node_a = make_daemon(database=dsn, node_name="node-a")
    node_b = make_daemon(database=dsn, node_name="node-b")
    gate = tmp_path / "gate"
    node_a.client.deploy(make_project("follow", gated_logging_handler(gate)))
    job_id = node_a.client.submit("follow", {"item_list": {"items": [1, 2], "batch_size": 1}})[
        "job_id"
    ]
    lines: list[dict[str, Any]] = []

    def follow() -> None:
        lines.extend(node_b.client.stream_job_logs("follow", job_id, follow=True))

    reader = threading.Thread(target=follow)
    reader.start()
    wait_for(lambda: any(r["message"] == "started 1" for r in lines), what="a live record")
    assert reader.is_alive()
    assert node_b.client.get_job("follow", job_id)["job_status"]["status"] == "running"
    gate.touch()
    reader.join(timeout=120)
    assert not reader.is_alive()
    assert [r["message"] for r in lines] == ["started 1", "finished 1", "started 2", "finished 2"]
    assert node_b.client.get_job("follow", job_id)["job_status"]["status"] == "succeeded"


async def _read_all(logs: PostgresJobLogs, job_id: str) -> list[bytes]:
    return [line async for line in logs.read(job_id, LogRead())]


async def test_lines_wait_bounded_while_the_database_cannot_take_them(dsn: str) -> None:
    store = PostgresStore(dsn)
    await store.open()
    job_id = await running_job(store, 1)
    records = [{"levelname": "INFO", "message": f"line {n}", "labels": {}} for n in range(5)]
    size = len(encode_record(records[0]))
    conn = await asyncpg.connect(dsn)
    # No table to store lines in: every flush fails until it is back.
    await conn.execute("ALTER TABLE job_logs RENAME TO job_logs_away")
    logs = await PostgresJobLogs.open(dsn, "node-x", queue_bytes=3 * size)
    try:
        drops: list[None] = []
        job_log = logs.acquire(job_id)
        write = guarded_writer(job_log, job_id, lambda: drops.append(None))
        for record in records:
            write(record)
        # What does not fit is dropped and counted, as a full disk's records are.
        assert (job_log.dropped, len(drops)) == (2, 2)
        logs.release(job_id)

        await conn.execute("ALTER TABLE job_logs_away RENAME TO job_logs")
        deadline = time.monotonic() + 30
        while len(stored := await _read_all(logs, job_id)) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert stored == [encode_record(record) for record in records[:3]]

        # Room again; what is queued at the stop is stored before the stop ends.
        write = guarded_writer(logs.acquire(job_id), job_id, lambda: drops.append(None))
        write(records[3])
        write(records[4])
        assert len(drops) == 2
    finally:
        await logs.close()
    rows = await conn.fetch("SELECT node, line FROM job_logs ORDER BY id")
    assert [(node, bytes(line)) for node, line in rows] == [
        ("node-x", encode_record(record)) for record in records
    ]
    await conn.close()
    await store.close()


def test_the_workers_of_one_job_on_two_daemons_write_one_log(
    make_daemon: Callable[..., Daemon], make_project: Project, dsn: str, tmp_path: Path
) -> None:
    # One worker each: the job's two workers are one on each node.
    nodes = [
        make_daemon(start=False, database=dsn, node_name=f"node-{n}", max_workers=1) for n in "ab"
    ]
    nodes[0].start()
    gate = tmp_path / "gate"
    nodes[0].client.deploy(
        make_project(
            "split",
            f"""
            import os, time
            from batchd import logger

            class Handler:
                def __init__(self, config):
                    pass

                def handle_batch(self, payload):
                    item = str(payload[0])
                    logger.info("started " + item)
                    while not os.path.exists({str(gate)!r}):
                        time.sleep(0.01)
                    for n in range({LINES_PER_BATCH}):
                        logger.info(item + " line " + str(n), extra={{"n": n}})
            """,
        )
    )
    # Until a project is fetched from the database, each node has its copy.
    shutil.copytree(nodes[0].state_dir / "apis", nodes[1].state_dir / "apis")
    nodes[1].start()
    items = [1, 2, 3, 4]
    job = nodes[0].client.submit(
        "split", {"workers": 2, "item_list": {"items": items, "batch_size": 1}}
    )
    job_id = job["job_id"]
    query = "SELECT DISTINCT node FROM job_logs JOIN jobs ON job = key WHERE job_id = $1"
    wait_for(
        lambda: {row[0] for row in _sql(dsn, query, job_id)} == {"node-a", "node-b"},
        what="a started line from each node",
    )
    gate.touch()
    assert wait_job(nodes[1].client, "split", job_id)["status"] == "succeeded"

    expected = len(items) * (LINES_PER_BATCH + 1)
    records = wait_for(
        lambda: len(r := fetch_logs(nodes[1], "split", job_id)) == expected and r,
        what="every line of both nodes",
    )
    assert fetch_logs(nodes[0], "split", job_id) == records
    rows = _sql(dsn, "SELECT line FROM job_logs ORDER BY id")
    assert [json.loads(line) for (line,) in rows] == records
    messages = [r["message"] for r in records]
    for item in items:
        mine = [m for m in messages if m.startswith(f"{item} line ")]
        assert mine == [f"{item} line {n}" for n in range(LINES_PER_BATCH)]
        assert messages.index(f"started {item}") < messages.index(f"{item} line 0")
        (started,) = [r for r in records if r["message"] == f"started {item}"]
        assert started["labels"]["batchID"] == f"{job_id}-{item}"
