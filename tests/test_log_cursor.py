"""A log read that resumes where a dropped one stopped: each record's `log_cursor` is the
position just after it, and a read from there (`after`) yields the rest, on both log
backends; a position inside a line resumes at the next line. Plus the HTTP route's
`cursor`/`after` parameters."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchd.client import BatchdError
from batchd.observe.joblogs import CURSOR_KEY, JobLogFiles, JobLogs, LogRead
from batchd.observe.pglogs import PostgresJobLogs
from batchd.store.postgres.store import PostgresStore
from testkit.launcher import Daemon
from tests import pg
from tests.conftest import wait_job
from tests.store.support import running_job
from tests.test_cli import PICKY_HANDLER, Project

RECORDS = [
    {"levelname": level, "message": f"line {n}", "labels": {"jobID": "j"}}
    for n, level in enumerate(["INFO", "WARNING", "INFO", "ERROR", "INFO"])
]


async def read(logs: JobLogs, job_id: str, **request: Any) -> list[dict[str, Any]]:
    return [json.loads(line) async for line in logs.read(job_id, LogRead(**request))]


async def check_resuming(logs: JobLogs, job_id: str) -> None:
    everything = await read(logs, job_id, cursor=True)
    assert [r["message"] for r in everything] == [r["message"] for r in RECORDS]
    # Without `cursor` the records are as written.
    assert await read(logs, job_id) == RECORDS
    for index, record in enumerate(everything):
        rest = await read(logs, job_id, start=record[CURSOR_KEY], cursor=True)
        assert rest == everything[index + 1 :]
    # Filters apply after the position: only the rest's warnings and errors.
    rest = await read(logs, job_id, start=everything[1][CURSOR_KEY], min_level="warning")
    assert [r["message"] for r in rest] == ["line 3"]


async def test_file_logs_resume_at_a_cursor(tmp_path: Path) -> None:
    logs = JobLogFiles(tmp_path)
    log = logs.acquire("j")
    for record in RECORDS:
        log.write(record)
    logs.release("j")
    await check_resuming(logs, "j")
    # A position inside a line (a made-up cursor) goes on at the next whole line.
    first = await read(logs, "j", cursor=True)
    inside = first[1][CURSOR_KEY] - 5
    assert [r["message"] for r in await read(logs, "j", start=inside)] == [
        "line 2",
        "line 3",
        "line 4",
    ]
    size = await logs.size("j")
    assert await read(logs, "j", start=size) == await read(logs, "j", start=size + 10) == []
    assert await read(logs, "j", start=2**53) == []


@pytest.fixture
def dsn(postgres_cluster: pg.Cluster) -> Iterator[str]:
    with postgres_cluster.fresh_schema() as fresh:
        yield fresh


async def test_postgres_logs_resume_at_a_cursor(dsn: str) -> None:
    store = PostgresStore(dsn)
    await store.open()
    job_id = await running_job(store, 1)
    logs = await PostgresJobLogs.open(dsn, "node-x")
    try:
        log = logs.acquire(job_id)
        for record in RECORDS:
            log.write(record)
        logs.release(job_id)
        await check_resuming(logs, job_id)
    finally:
        await logs.close()
        await store.close()


def test_the_logs_route_gives_and_takes_cursors(daemon: Daemon, make_project: Project) -> None:
    client = daemon.client
    client.deploy(make_project("picky", PICKY_HANDLER))
    items = {"item_list": {"items": ["a", "b"], "batch_size": 1}}
    job_id = client.submit("picky", items)["job_id"]
    wait_job(client, "picky", job_id)
    path = "/batch/picky/logs"
    plain = list(client.stream_job_logs("picky", job_id))
    assert [r["message"] for r in plain] == ["ready", "took a", "took b"]
    records = list(client._stream(path, {"jobID": job_id, "cursor": "true"}, 30))
    assert all(isinstance(r[CURSOR_KEY], int) for r in records)
    assert [{k: v for k, v in r.items() if k != CURSOR_KEY} for r in records] == plain
    after = {"jobID": job_id, "after": str(records[0][CURSOR_KEY])}
    assert list(client._stream(path, after, 30)) == plain[1:]
    # Past any file the filesystem can hold: nothing, not a 500.
    assert list(client._stream(path, {"jobID": job_id, "after": str(2**53)}, 30)) == []
    with pytest.raises(BatchdError) as refused:
        list(client._stream(path, {**after, "tail": "1"}, 30))
    assert (refused.value.status, refused.value.field) == (400, "after")
    with pytest.raises(BatchdError) as refused:
        list(client._stream(path, {"jobID": job_id, "after": "-1"}, 30))
    assert (refused.value.status, refused.value.field) == (400, "after")
