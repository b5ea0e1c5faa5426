"""The SQLite store's statements: all used, the status lists generated from one place and
matching the schema's partial index, and a listing page read in one statement."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from batchd.constants import DB_FILENAME
from batchd.statuses import ACTIVE_STATUSES, TERMINAL_STATUSES
from batchd.store import sqlfiles
from batchd.store.sqlite import queries
from batchd.store.sqlite.store import SqliteStore
from tests.store.support import new_job, payloads, running_job


def test_every_named_statement_is_used_and_filled_in() -> None:
    assert queries.QUERIES.unused() == set()
    for name, statement in queries.QUERIES.statements.items():
        assert not re.search(r"\{\w+\}", statement), name
        assert statement and "--" not in statement, name


def test_the_status_lists_come_from_the_statuses_module() -> None:
    active = ", ".join(f"'{status}'" for status in ACTIVE_STATUSES)
    assert f"status IN ({active})" in queries.QUERIES.statements["active_jobs"]
    terminal = re.search(r"NOT IN \(([^)]*)\)", queries.QUERIES.statements["set_status"])
    assert terminal is not None
    assert set(re.findall(r"'(\w+)'", terminal.group(1))) == set(TERMINAL_STATUSES)


def test_parse_names_statements_and_drops_comments() -> None:
    text = "-- file\n\n-- name: one\n-- why\nSELECT 1\n\n-- name: two\nSELECT 2;\n"
    assert sqlfiles.parse(text) == {"one": "SELECT 1", "two": "SELECT 2;"}
    with pytest.raises(ValueError, match="twice"):
        sqlfiles.parse("-- name: a\nSELECT 1\n-- name: a\nSELECT 2\n")


def test_statements_split_a_script_where_sqlite_would() -> None:
    script = (
        "-- a comment; with a semicolon\nCREATE TABLE t (x TEXT);\nINSERT INTO t VALUES ('a;b');\n"
    )
    assert queries.statements(script) == [
        "CREATE TABLE t (x TEXT);",
        "INSERT INTO t VALUES ('a;b');",
    ]
    with pytest.raises(ValueError, match="unfinished"):
        queries.statements("SELECT 1")


async def test_active_job_queries_use_the_partial_index(tmp_path: Path, store: SqliteStore) -> None:
    """SQLite uses jobs_active only for a query whose IN-list is the index's own."""
    with sqlite3.connect(tmp_path / DB_FILENAME) as conn:
        (index,) = conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'jobs_active'"
        ).fetchone()
        active = ", ".join(f"'{status}'" for status in ACTIVE_STATUSES)
        assert index.endswith(f"WHERE status IN ({active})")
        for name in ("active_jobs", "queue_depth", "jobs_holding_leases"):
            plan = conn.execute(f"EXPLAIN QUERY PLAN {queries.QUERIES.statements[name]}").fetchall()
            assert any("jobs_active" in row[-1] for row in plan), (name, plan)


async def test_a_listing_page_is_one_statement(store: SqliteStore) -> None:
    for _ in range(5):
        await running_job(store, 2)
    seen: list[str] = []
    reader = store._r
    await reader._execute(reader._conn.set_trace_callback, seen.append)
    try:
        listed = await store.list_jobs_page(["demo"], 10)
        active = await store.list_jobs_page(["demo"], 10, active_only=True)
    finally:
        await reader._execute(reader._conn.set_trace_callback, None)
    assert len(listed) == len(active) == 5
    assert all(entry.counts.queued == 2 for entry in listed)
    assert len(seen) == 2


async def test_on_commit_is_told_each_commits_time(tmp_path: Path) -> None:
    timings: list[float] = []
    store = SqliteStore(tmp_path / DB_FILENAME, on_commit=timings.append)
    await store.open()
    try:
        migrated = len(timings)
        job = await store.create_job(new_job(), payloads(1))
        await store.set_has_on_complete(job.job_id, True)
    finally:
        await store.close()
    assert migrated == 1 and len(timings) == 3
    assert all(isinstance(seconds, float) and 0 <= seconds < 60 for seconds in timings)
