"""What the PostgreSQL server says about the daemons' sessions, read directly: for a
stalled scenario's message, and to catch a node inside a transaction."""

from __future__ import annotations

import asyncio

import asyncpg


def database_activity(dsn: str) -> str:
    """Every session on the tests' database: who waits on what (a stalled node's open
    transaction holding locks, say), for a failure's message."""

    async def read() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            return await conn.fetch(
                "SELECT pid, application_name, client_addr, state, wait_event_type, wait_event,"
                " now() - xact_start AS in_transaction, left(query, 120) AS query"
                " FROM pg_stat_activity WHERE datname = current_database() AND pid <>"
                " pg_backend_pid() ORDER BY pid"
            )
        finally:
            await conn.close()

    try:
        rows = asyncio.run(read())
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"(cannot read pg_stat_activity: {exc})"
    return "\n".join(str(dict(row)) for row in rows)


def locking_sessions(dsn: str, ports: set[int]) -> list[int]:
    """Server pids of the sessions from `ports` that sit idle inside a transaction holding
    a lock on the jobs table (a row locked for a lease or a counter update)."""

    async def read() -> list[int]:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            rows = await conn.fetch(
                "SELECT DISTINCT a.pid FROM pg_stat_activity a"
                " JOIN pg_locks l ON l.pid = a.pid JOIN pg_class c ON c.oid = l.relation"
                " WHERE a.client_port = ANY($1::int[]) AND a.state = 'idle in transaction'"
                " AND c.relname = 'jobs' AND l.mode IN ('RowShareLock', 'RowExclusiveLock')",
                sorted(ports),
            )
            return [row["pid"] for row in rows]
        finally:
            await conn.close()

    return asyncio.run(read())
