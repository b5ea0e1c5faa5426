"""The SQLite schema: numbered migrations, run from the database's version on."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from batchd.constants import CHUNK_BATCHES, DB_FILENAME, SCHEMA_VERSION
from batchd.store.records import Failure, JobStatus, Success
from batchd.store.sqlite.queries import MIGRATIONS
from batchd.store.sqlite.store import SqliteStore
from tests.store.sqlite.rows import chunk_rows
from tests.store.support import lease_all, new_job, payloads, running_job


async def test_schema_is_versioned_and_wal(tmp_path: Path, store: SqliteStore) -> None:
    conn = sqlite3.connect(tmp_path / DB_FILENAME)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_migrations_are_numbered_up_to_the_schema_version() -> None:
    assert [name[:4] for name, _ in MIGRATIONS] == [
        f"{number:04d}" for number in range(1, SCHEMA_VERSION + 1)
    ]
    assert all(statements for _, statements in MIGRATIONS)


async def test_refuses_database_from_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(RuntimeError, match="schema version"):
        await SqliteStore(path).open()


def schema(path: Path) -> dict[str, Any]:
    """Every table's columns and every index's columns and definition."""
    with sqlite3.connect(path) as conn:
        found: dict[str, Any] = {}
        for kind, name, sql in conn.execute("SELECT type, name, sql FROM sqlite_master"):
            if kind == "table":
                found[name] = conn.execute(f"PRAGMA table_xinfo({name})").fetchall()
            elif kind == "index":
                found[name] = (conn.execute(f"PRAGMA index_xinfo({name})").fetchall(), sql)
        return found


async def test_an_upgraded_database_has_the_schema_of_a_fresh_one(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.sqlite3"
    store = SqliteStore(fresh)
    await store.open()
    await store.close()
    old = tmp_path / "old.sqlite3"
    with sqlite3.connect(old) as conn:
        for statement in MIGRATIONS[0][1]:
            conn.execute(statement)
        conn.execute("PRAGMA user_version=1")
    store = SqliteStore(old)
    await store.open()
    await store.close()
    assert schema(old) == schema(fresh)
    assert {"jobs", "batches", "failures", "chunks", "apis", "batches_queued"} <= set(schema(fresh))


def undo_schema_5(conn: sqlite3.Connection) -> None:
    """Take a database of this schema back to before the pauses (schema 5)."""
    for column in ("paused", "paused_at", "paused_seconds"):
        conn.execute(f"ALTER TABLE jobs DROP COLUMN {column}")
    conn.execute("DROP TABLE paused_apis")


async def test_a_schema_1_database_gets_counters_recounted_from_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    store = SqliteStore(path)
    await store.open()
    job_id = await running_job(store, 6, max_receive_count=1)
    leases = await store.lease(job_id, 4, 60)
    await store.succeed(
        job_id, [Success(lease.seq, lease.token, 2.0, None) for lease in leases[:2]]
    )
    await store.fail(job_id, Failure(leases[2].seq, leases[2].token, "boom", None), 1)
    await store.close()
    # Back to schema 1: a row for every batch, no counters, no chunks.
    conn = sqlite3.connect(path)
    (key,) = conn.execute("SELECT key FROM jobs").fetchone()
    conn.executemany(
        "INSERT INTO batches (id, state, payload) VALUES (?, 'queued', '[0]')",
        [((key << 32) + seq,) for seq in (5, 6)],
    )
    for column in ("queued", "leased", "succeeded", "dead", "failure"):
        conn.execute(f"ALTER TABLE jobs DROP COLUMN {column}_count")
    conn.execute("ALTER TABLE jobs DROP COLUMN duration_sum")
    conn.execute("ALTER TABLE jobs DROP COLUMN materialized")
    conn.execute("ALTER TABLE batches DROP COLUMN finished_at")
    undo_schema_5(conn)
    conn.execute("DROP TABLE chunks")
    conn.execute("DROP INDEX batches_queued")
    conn.execute("DROP INDEX batches_dead")
    conn.execute("CREATE INDEX batches_by_state ON batches (state, id)")
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()
    store = SqliteStore(path)
    await store.open()
    try:
        counts = await store.counts(job_id)
        assert (counts.queued, counts.leased, counts.succeeded, counts.dead) == (2, 1, 2, 1)
        assert counts.failed_attempts == 1 and counts.average_time == 2.0
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"batches_queued", "batches_dead"} <= indexes and "batches_by_state" not in indexes
    conn.close()


async def test_a_schema_2_database_gets_its_chunks_renumbered(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    store = SqliteStore(path)
    await store.open()
    sent = payloads(2 * CHUNK_BATCHES + 5)
    job_id = (await store.create_job(new_job(), sent)).job_id
    await store.close()
    # Schema 2 numbered a job's chunks 0, 1, 2... each of 4096 batches.
    conn = sqlite3.connect(path)
    ids = [row[0] for row in conn.execute("SELECT id FROM chunks ORDER BY id")]
    for index, id_ in enumerate(ids):
        conn.execute("UPDATE chunks SET id = ? WHERE id = ?", ((id_ >> 32 << 32) + index, id_))
    conn.execute("ALTER TABLE batches DROP COLUMN finished_at")
    undo_schema_5(conn)
    conn.execute("PRAGMA user_version=2")
    conn.commit()
    conn.close()
    store = SqliteStore(path)
    await store.open()
    try:
        assert await store.set_status(job_id, JobStatus.RUNNING)
        assert await lease_all(store, job_id) == list(enumerate(sent, start=1))
    finally:
        await store.close()
    assert [before for before, _ in chunk_rows(path, job_id)] == [0, 4096, 8192]


async def test_renumbering_moves_past_ids_still_taken(tmp_path: Path) -> None:
    """A schema 2 job of more than 4096 chunks: chunk 1's new id (4096) was chunk 4096's."""
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:
        for _, statements in MIGRATIONS[:2]:
            for statement in statements:
                conn.execute(statement)
        conn.executemany(
            "INSERT INTO chunks (id, payloads) VALUES (?, ?)",
            [((1 << 32) + index, b"[%d]" % index) for index in range(4098)],
        )
        conn.execute("PRAGMA user_version=2")
    store = SqliteStore(path)
    await store.open()
    await store.close()
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT id - (1 << 32), payloads FROM chunks ORDER BY id").fetchall()
    assert rows == [(index * 4096, b"[%d]" % index) for index in range(4098)]
