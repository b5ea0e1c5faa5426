"""`batchd migrate`: a SQLite daemon killed mid-job, its queue moved to PostgreSQL, and a
daemon on PostgreSQL that finishes the job: succeeded batches are not run again, dead
ones stay dead, leased ones run again, and a finished job stays behind."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest

from batchd.apis.archive import unpack_project
from batchd.apis.rebuild import NotRebuilt, rebuilt_archive
from batchd.apis.registry import DIGEST_KEY, snapshot_digest
from batchd.apis.spec import pack_project
from batchd.cli.main import main
from batchd.client import BatchdError, Client
from batchd.constants import DB_FILENAME, SCHEMA_VERSION
from batchd.store.postgres.store import PostgresStore
from batchd.store.records import PAUSED_BY_API
from batchd.store.rows import SEQ_BITS
from batchd.store.sqlite.store import SqliteStore
from testkit.launcher import Daemon
from tests import pg
from tests.conftest import REPO, wait_for, wait_job

Project = Callable[..., Path]

# Records each call, fails "dead" every time, and holds "hold" until the gate file exists.
HANDLER = """
import os
import threading

CALLS = {calls!r}
GATE = {gate!r}


class Handler:
    def __init__(self, config):
        pass

    def handle_batch(self, payload, batch_id):
        item = payload[0]
        with open(CALLS, "a") as calls:
            calls.write(item + "\\n")
        if item == "dead":
            raise ValueError(f"cannot handle {{item}}")
        if item == "hold" and not os.path.exists(GATE):
            threading.Event().wait()
        return item.upper()
"""
# Items before "hold" all end (and are reported: a failure flushes the worker's report).
ITEMS = ["a", "b", "c", "dead", "hold", *(f"t{n}" for n in range(35))]
DEAD_SEQ = ITEMS.index("dead") + 1
HOLD_SEQ = ITEMS.index("hold") + 1


@pytest.fixture
def dsn(postgres_cluster: pg.Cluster) -> Iterator[str]:
    with postgres_cluster.fresh_schema() as fresh:
        yield fresh


def schema_of(dsn: str) -> str:
    return parse_qs(urlsplit(dsn).query)["search_path"][0]


def query(dsn: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    async def read() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(dsn)
        try:
            return [tuple(row) for row in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return asyncio.run(read())


def run_migrate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batchd", "migrate", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def deploy_m(client: Client, make_project: Project, tmp_path: Path) -> tuple[Path, Path]:
    """API m's handler, deployed: the files of its calls and of its gate."""
    calls, gate = tmp_path / "calls.txt", tmp_path / "gate"
    handler = HANDLER.format(calls=str(calls), gate=str(gate))
    assert client.deploy(make_project("m", handler))["version"] == 1
    return calls, gate


def held_job(client: Client, calls: Path) -> str:
    """A running job of ITEMS on API m holding "hold" leased: a, b, c succeeded, "dead"
    dead (one attempt allowed), the tail never leased."""
    job = client.submit(
        "m",
        {
            "workers": 1,
            "item_list": {"items": ITEMS, "batch_size": 1},
            "sqs_dead_letter_queue": {"arn": "ignored", "max_receive_count": 1},
        },
    )
    job_id: str = job["job_id"]

    def held() -> bool:
        metrics = client.get_job("m", job_id)["job_status"]["batch_metrics"]
        return bool((metrics["succeeded"], metrics["failed"]) == (3, 1))

    wait_for(held, what="a, b and c succeeded, dead dead")
    wait_for(lambda: calls.read_text().splitlines()[-1:] == ["hold"], what="hold held")
    return job_id


def test_a_half_done_job_moves_to_postgresql_and_finishes_there(
    make_daemon: Callable[..., Daemon], make_project: Project, dsn: str, tmp_path: Path
) -> None:
    daemon = make_daemon()
    client = daemon.client
    # An API deleted since: its version moves, marked deleted.
    assert client.deploy(make_project("gone", "class Handler:\n    pass\n"))["version"] == 1
    client.delete("gone")
    calls, gate = deploy_m(client, make_project, tmp_path)
    finished = client.submit("m", {"workers": 1, "item_list": {"items": ["x"], "batch_size": 1}})
    assert wait_job(client, "m", finished["job_id"])["status"] == "succeeded"
    job_id = held_job(client, calls)
    # A second version of m: the job runs on version 1.
    project = make_project("m", HANDLER.format(calls=str(calls), gate=str(gate)))
    (project / "notes.txt").write_text("version 2\n")
    assert client.deploy(project)["version"] == 2
    versions_before = client.get_api("m")["versions"]

    # While the daemon runs, the state dir is its own: refused, the database untouched.
    url_file = tmp_path / "database.url"
    url_file.write_text(dsn + "\n")
    state = daemon.state_dir
    busy = run_migrate("--state-dir", str(state), "--to-file", str(url_file))
    assert busy.returncode == 1
    assert busy.stderr == f"error: a batchd daemon is running on {state}: stop it first\n"
    tables = "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1"
    assert query(dsn, tables, schema_of(dsn)) == [(0,)]

    # Paused, the API and so its job: the pause moves with them.
    assert client.pause_api("m")["jobs"] == [job_id]
    # Killed mid-job: "hold" (and whatever its grant held) is leased, the tail never was.
    daemon.kill()
    phase_one = calls.read_text().splitlines()
    assert phase_one == ["x", "a", "b", "c", "dead", "hold"]
    moved = run_migrate("--state-dir", str(state), "--to-file", str(url_file), "-o", "json")
    assert moved.returncode == 0, moved.stderr
    report = json.loads(moved.stdout)
    total = len(ITEMS)
    assert report["apis"] == ["gone", "m"]
    assert report["versions"] == 3
    assert report["jobs"] == [job_id]
    assert report["finished_left"] == 1
    assert report["archive_bytes"] > 0
    assert (report["batches"], report["queued"], report["succeeded"]) == (total, total - 4, 3)
    assert (report["dead"], report["failures"]) == (1, 1)
    assert report["refunded"] >= 1

    # What PostgreSQL holds: the versions as they were, the job under a new key with its
    # counters recounted, its leases refunded, and its never-leased tail in its chunk.
    api_rows = "SELECT name, version, spec, dotenv, created_at, deleted_at FROM apis ORDER BY 1, 2"
    with contextlib.closing(sqlite3.connect(state / DB_FILENAME)) as source:
        sqlite_apis = source.execute(api_rows).fetchall()
        (old_key,) = source.execute("SELECT key FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    assert query(dsn, api_rows) == sqlite_apis
    assert [row[:2] for row in sqlite_apis] == [("gone", 1), ("m", 1), ("m", 2)]
    assert [row[5] is None for row in sqlite_apis] == [False, True, True]
    ((key, status, counters, materialized),) = query(
        dsn,
        "SELECT key, status, ARRAY[queued_count, leased_count, succeeded_count, dead_count, "
        "failure_count], materialized FROM jobs",
    )
    assert key != old_key
    assert status == "running"
    assert query(dsn, "SELECT paused FROM jobs") == [(PAUSED_BY_API,)]
    assert query(dsn, "SELECT name FROM paused_apis") == [("m",)]
    assert counters == [total - 4, 0, 3, 1, 1]
    assert HOLD_SEQ <= materialized < total
    ((seconds, of_rows),) = query(
        dsn,
        "SELECT duration_sum, (SELECT sum(duration) FROM batches WHERE state = 'succeeded') "
        "FROM jobs",
    )
    assert seconds == pytest.approx(of_rows) and seconds > 0
    first = key << SEQ_BITS
    batches = query(dsn, "SELECT id, state, attempts, lease_token, result FROM batches")
    rows = {row[0] - first: row[1:] for row in batches}
    assert sorted(rows) == list(range(1, materialized + 1))
    assert [rows[seq] for seq in (1, 2, 3)] == [
        ("succeeded", 1, None, f'"{item}"'.encode()) for item in "ABC"
    ]
    assert rows[DEAD_SEQ] == ("dead", 1, None, None)
    assert rows[HOLD_SEQ] == ("queued", 0, None, None)
    assert query(dsn, "SELECT id FROM chunks") == [(first,)]
    ((failed_batch, attempt, error),) = query(dsn, "SELECT batch, attempt, error FROM failures")
    assert (failed_batch - first, attempt) == (DEAD_SEQ, 1)
    assert error == b"ValueError: cannot handle dead"

    # Moved already: a second run refuses, naming what is there, and adds nothing.
    again = run_migrate("--state-dir", str(state), "--to", dsn)
    assert again.returncode == 1
    assert again.stderr.startswith(
        f"error: the database already holds API gone, m and job {job_id}: nothing was moved"
    )
    assert query(dsn, "SELECT count(*) FROM jobs") == [(1,)]
    assert query(dsn, "SELECT count(*) FROM batches") == [(materialized,)]

    # A daemon on PostgreSQL, on the same state dir (its snapshots), finishes the job.
    gate.touch()
    on_postgres = make_daemon(database=dsn)
    client = on_postgres.client
    assert client.get_api("m")["versions"] == versions_before
    assert client.get_job("m", job_id)["job_status"]["status"] == "paused"
    assert client.resume_api("m")["jobs"] == [job_id]
    status = wait_job(client, "m", job_id)
    assert status["status"] == "completed_with_failures"
    metrics = status["batch_metrics"]
    assert (metrics["succeeded"], metrics["failed"], metrics["failed_attempts"]) == (
        total - 1,
        1,
        1,
    )
    results = sorted((r["batch_id"], r["result"]) for r in client.results("m", job_id))
    expected = [(f"{job_id}-{seq}", item.upper()) for seq, item in enumerate(ITEMS, 1)]
    assert results == sorted(expected[: DEAD_SEQ - 1] + expected[DEAD_SEQ:])
    (dead,) = client.failed("m", job_id)
    assert (dead["batch_id"], dead["attempts"]) == (f"{job_id}-{DEAD_SEQ}", 1)
    assert dead["error"] == "ValueError: cannot handle dead"
    # Succeeded and dead batches were not run again; every other one ran once more.
    phase_two = Counter(calls.read_text().splitlines()[len(phase_one) :])
    assert phase_two == Counter(ITEMS[DEAD_SEQ:])
    # The finished job stayed behind.
    with pytest.raises(BatchdError) as missing:
        client.get_job("m", finished["job_id"])
    assert missing.value.status == 404
    assert query(dsn, "SELECT job_id FROM jobs") == [(job_id,)]
    # Run from the stored archive, unpacked on first use and checked against its digest.
    assert len(list((on_postgres.state_dir / "apis" / "m").iterdir())) == 1


def test_a_move_the_database_refuses_midway_leaves_it_untouched_and_can_run_again(
    make_daemon: Callable[..., Daemon],
    make_project: Project,
    postgres_cluster: pg.Cluster,
    dsn: str,
    tmp_path: Path,
) -> None:
    daemon = make_daemon()
    calls, _ = deploy_m(daemon.client, make_project, tmp_path)
    job_id = held_job(daemon.client, calls)
    # Stopped cleanly this time: "hold" is released, and the file has no write-ahead log.
    assert daemon.stop() == 0
    source = daemon.state_dir / DB_FILENAME
    assert not source.with_name(f"{DB_FILENAME}-wal").exists()

    async def create_schema() -> None:
        store = PostgresStore(dsn)
        await store.open()
        await store.close()

    asyncio.run(create_schema())
    # Failures are copied after the APIs, the job, its batches and its chunks.
    schema = schema_of(dsn)
    postgres_cluster.sql(
        f"CREATE FUNCTION {schema}.refuse() RETURNS trigger LANGUAGE plpgsql AS "
        "$$BEGIN RAISE EXCEPTION 'no failures here'; END$$;"
        f"CREATE TRIGGER refuse BEFORE INSERT ON {schema}.failures "
        f"FOR EACH ROW EXECUTE FUNCTION {schema}.refuse();",
        pg.DATABASE,
    )
    refused = run_migrate("--state-dir", str(daemon.state_dir), "--to", dsn)
    assert refused.returncode == 1
    assert refused.stderr == (
        "error: the database refused the move, nothing was moved: no failures here\n"
    )
    for table in ("apis", "jobs", "batches", "chunks", "failures"):
        assert query(dsn, f"SELECT count(*) FROM {table}") == [(0,)], table

    postgres_cluster.sql(f"DROP TRIGGER refuse ON {schema}.failures", pg.DATABASE)
    moved = run_migrate("--state-dir", str(daemon.state_dir), "--to", dsn)
    assert moved.returncode == 0, moved.stderr
    total = len(ITEMS)
    assert moved.stdout.splitlines()[0] == (
        f"moved 1 API(s) (1 version(s)) and 1 unfinished job(s) ({total} batch(es): "
        f"{total - 4} queued, 3 succeeded, 1 dead; 1 failed attempt(s)) to PostgreSQL"
    )
    assert query(dsn, "SELECT job_id, succeeded_count, dead_count FROM jobs") == [(job_id, 3, 1)]
    assert query(dsn, "SELECT attempt, error FROM failures") == [
        (1, b"ValueError: cannot handle dead")
    ]
    # Only read: a -wal or -shm file left by the reader would belong to its user.
    assert sorted(path.name for path in daemon.state_dir.glob(f"{DB_FILENAME}*")) == [DB_FILENAME]


def test_migrate_says_what_is_wrong_before_touching_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    url = "postgresql://nobody@127.0.0.1:1/none"

    def error_of(*args: str) -> tuple[int, str]:
        code = main(["migrate", "--state-dir", str(state), *args])
        return code, capsys.readouterr().err

    assert error_of("--to", url) == (
        1,
        f"error: {state / DB_FILENAME}: no SQLite queue there (is {state} a batchd state dir?)\n",
    )
    with contextlib.closing(sqlite3.connect(state / DB_FILENAME)) as old:
        old.execute("PRAGMA user_version = 2")
    assert error_of("--to", "mysql://somewhere/db") == (
        2,
        "error: --to: must be a postgresql:// URL\n",
    )
    missing = tmp_path / "missing.url"
    assert error_of("--to-file", str(missing)) == (
        2,
        f"error: --to-file: cannot read {missing}: No such file or directory\n",
    )
    assert error_of("--to", url) == (
        1,
        f"error: {state / DB_FILENAME} has schema version 2, this batchd moves version "
        f"{SCHEMA_VERSION}: run this batchd's daemon on the state dir once first\n",
    )


TRICKY_TOML = r"""
name = "tricky"
[handler]
path = "pkg/handler.py"
batch_timeout = 600
env = { MODE = "fast" }
[handler.config]
text = "quote \" back\\slash\ttab é 😀 del\u007f"
numbers = [1, 0.1, 1e300, -2]
flags = [true, false]
nested = { "dotted.key" = [{ a = -2 }], empty = {} }
[compute]
mem = "64M"
[retention]
days = 2.5
"""


def test_a_rebuilt_archive_unpacks_to_what_was_deployed_and_a_changed_snapshot_is_refused(
    tmp_path: Path,
) -> None:
    project = tmp_path / "project"
    (project / "pkg").mkdir(parents=True)
    (project / "batchd.toml").write_text(TRICKY_TOML, encoding="utf-8")
    (project / ".env").write_text("TOKEN='it's = #not a comment'\nexport PLAIN= x y \n")
    (project / "pkg" / "handler.py").write_text("class Handler:\n    pass\n")
    (project / "data.bin").write_bytes(bytes(range(256)))
    # As a deploy records it: the snapshot, and the spec with what the daemon adds.
    snapshot = tmp_path / "snapshot"
    deployed = unpack_project(pack_project(project, sys.maxsize), snapshot, sys.maxsize)
    spec = deployed.spec.model_dump()
    digest = snapshot_digest(snapshot, spec, deployed.dotenv)
    stored = json.loads(json.dumps({**spec, "snapshot": "abc", "files": 2, DIGEST_KEY: digest}))
    assert deployed.dotenv == {"TOKEN": "it's = #not a comment", "PLAIN": "x y"}

    rebuilt = rebuilt_archive(snapshot, stored, deployed.dotenv)
    again = unpack_project(rebuilt, tmp_path / "again", sys.maxsize)
    assert (again.spec, again.dotenv, again.files) == (
        deployed.spec,
        deployed.dotenv,
        deployed.files,
    )
    assert snapshot_digest(tmp_path / "again", again.spec.model_dump(), again.dotenv) == digest

    # A snapshot changed since its deploy is not what the digest names: refused.
    (snapshot / "data.bin").chmod(0o644)
    (snapshot / "data.bin").write_bytes(b"changed")
    with pytest.raises(NotRebuilt, match="does not match the digest"):
        rebuilt_archive(snapshot, stored, deployed.dotenv)


def test_a_database_migrate_cannot_reach_is_named_without_its_password(
    postgres_cluster: pg.Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def empty_queue() -> None:
        store = SqliteStore(tmp_path / DB_FILENAME)
        await store.open()
        await store.close()

    asyncio.run(empty_queue())
    wrong = postgres_cluster.dsn.replace(postgres_cluster.password, "not-the-password")
    assert main(["migrate", "--state-dir", str(tmp_path), "--to", wrong]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: cannot connect to postgresql://batchd_tests:***@127.0.0.1:")
    assert "not-the-password" not in error
