"""The PostgreSQL store's own promises: its statements all used, its schema migrated
once under an advisory lock however many daemons open together, a newer schema refused,
and leasing that skips what another transaction holds."""

from __future__ import annotations

import asyncio
import re

import asyncpg
import pytest

from batchd.statuses import ACTIVE_STATUSES
from batchd.store.postgres import queries
from batchd.store.postgres.core import SCHEMA_VERSION
from batchd.store.postgres.store import PostgresStore
from batchd.store.records import Failure
from tests.store.support import running_job


def test_every_named_statement_is_used_and_filled_in() -> None:
    import batchd.store.postgres.store  # noqa: F401  (every role picks its statements)

    assert queries.QUERIES.unused() == set()
    for name, statement in queries.QUERIES.statements.items():
        assert not re.search(r"\{\w+\}", statement), name
        assert statement and "--" not in statement, name


def test_the_active_index_lists_the_active_statuses() -> None:
    (_, script), *_ = queries.MIGRATIONS
    listed = re.search(r"jobs_active ON jobs \(status\) WHERE status IN \(([^)]*)\)", script)
    assert listed is not None
    assert listed.group(1) == ", ".join(f"'{status}'" for status in ACTIVE_STATUSES)


async def test_daemons_opening_together_migrate_once(dsn: str) -> None:
    stores = [PostgresStore(dsn) for _ in range(4)]
    await asyncio.gather(*(store.open() for store in stores))
    try:
        conn = await asyncpg.connect(dsn)
        try:
            versions = await conn.fetch("SELECT version FROM batchd_schema")
            assert [row[0] for row in versions] == [SCHEMA_VERSION] == [len(queries.MIGRATIONS)]
        finally:
            await conn.close()
        # Every one of them works on the one schema.
        job_id = await running_job(stores[0], 2)
        assert [lease.seq for lease in await stores[3].lease(job_id, 5, 60)] == [1, 2]
    finally:
        await asyncio.gather(*(store.close() for store in stores))


async def test_a_newer_schema_is_refused(dsn: str) -> None:
    store = PostgresStore(dsn)
    await store.open()
    await store.close()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("UPDATE batchd_schema SET version = $1", SCHEMA_VERSION + 1)
    finally:
        await conn.close()
    with pytest.raises(RuntimeError, match=f"schema version {SCHEMA_VERSION + 1}; this batchd"):
        await PostgresStore(dsn).open()


async def test_two_stores_leasing_one_job_never_share_a_batch(dsn: str) -> None:
    one, two = PostgresStore(dsn), PostgresStore(dsn)
    await one.open()
    await two.open()
    try:
        job_id = await running_job(one, 40, max_receive_count=3)
        # Half the batches failed once: re-queued rows, leased by `lease_queued`; the
        # rest have no row yet and are given one as they are leased.
        for lease in await one.lease(job_id, 20, 60):
            await one.fail(job_id, Failure(lease.seq, lease.token, "x", None), 3)
        grants = await asyncio.gather(
            *(store.lease(job_id, 3, 60) for _ in range(8) for store in (one, two))
        )
        seqs = [lease.seq for grant in grants for lease in grant]
        assert sorted(seqs) == list(range(1, 41))
        counts = await two.counts(job_id)
        assert (counts.queued, counts.leased, counts.failed_attempts) == (0, 40, 20)
    finally:
        await one.close()
        await two.close()
