"""The PostgreSQL store through a server restart, an outage and a connection lost during
a COMMIT, on a cluster of this module's own (the session's is shared by every test).

What a caller sees is defined so: while the server is down every call raises
DatabaseUnavailable (a write within the reconnect backoff at once, without trying the
server); once it is back the next calls succeed on new connections, the store never
reopened. A write whose COMMIT answer was lost raised DatabaseUnavailable although it
committed, and repeating it changes nothing more.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TypeVar

import pytest

from batchd.store import DatabaseUnavailable
from batchd.store.postgres.core import RECONNECT_FIRST
from batchd.store.postgres.store import PostgresStore
from batchd.store.records import BatchState, Failure, Success
from tests import pg
from tests.store.support import running_job

T = TypeVar("T")


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[pg.Cluster]:
    """A cluster these tests stop and restart."""
    with pg.cluster() as cluster:
        yield cluster


@pytest.fixture
async def store(own_cluster: pg.Cluster) -> AsyncIterator[PostgresStore]:
    with own_cluster.fresh_schema() as dsn:
        opened = PostgresStore(dsn)
        await opened.open()
        try:
            yield opened
        finally:
            await opened.close()


async def once_available(call: Callable[[], Awaitable[T]], timeout: float = 30.0) -> T:
    """`call`'s answer once the store reaches its server again; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except DatabaseUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def test_after_a_restart_the_next_calls_succeed_on_new_connections(
    store: PostgresStore, own_cluster: pg.Cluster
) -> None:
    job_id = await running_job(store, 4)
    # In a thread, so the loop sees the server cut its connections, as a daemon's does.
    await asyncio.to_thread(own_cluster.restart)
    # The writer connects again, the read pool replaces its connections.
    assert [lease.seq for lease in await store.lease(job_id, 2, 60)] == [1, 2]
    assert (await store.counts(job_id)).leased == 2
    await store.ping()


async def test_while_the_server_is_down_calls_raise_database_unavailable(
    store: PostgresStore, own_cluster: pg.Cluster
) -> None:
    job_id = await running_job(store, 4)
    (held,) = await store.lease(job_id, 1, 60)
    await asyncio.to_thread(own_cluster.shut_down)
    try:
        with pytest.raises(DatabaseUnavailable) as refused:
            await store.lease(job_id, 1, 60)
        message = str(refused.value)
        assert f"batchd_tests:***@127.0.0.1:{own_cluster.port}" in message
        assert own_cluster.password not in message
        # Within the backoff a write fails at once, and says when the next try is.
        with pytest.raises(DatabaseUnavailable, match="trying again in") as backing_off:
            await store.succeed(job_id, [Success(held.seq, held.token, 0.1, b"1")])
        assert 0 < backing_off.value.retry_after <= RECONNECT_FIRST
        assert own_cluster.password not in str(backing_off.value)
        with pytest.raises(DatabaseUnavailable):
            await store.counts(job_id)
        with pytest.raises(DatabaseUnavailable):
            await store.ping()
    finally:
        await asyncio.to_thread(own_cluster.serve)
    # Back: the held lease's outcome is stored, once, by the same store.
    success = Success(held.seq, held.token, 0.1, b"1")
    assert await once_available(lambda: store.succeed(job_id, [success])) == 1
    assert await store.succeed(job_id, [success]) == 0
    counts = await once_available(lambda: store.counts(job_id))
    assert (counts.succeeded, counts.leased, counts.queued) == (1, 0, 3)
    await store.ping()


class CommitCutter:
    """A TCP proxy in front of the server. Armed, it passes the next COMMIT on, drops
    the server's answer and cuts that connection: the transaction is committed and its
    client cannot tell (a connection lost during its COMMIT)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.armed = False
        self.cut = 0
        self._connections: set[asyncio.StreamWriter] = set()

    async def serve(self) -> asyncio.Server:
        return await asyncio.start_server(self._relay, "127.0.0.1", 0)

    def close(self) -> None:
        for writer in self._connections:
            writer.transport.abort()

    async def _relay(self, client_in: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        server_in, server = await asyncio.open_connection("127.0.0.1", self.port)
        self._connections |= {client, server}
        committing = asyncio.Event()

        async def upstream() -> None:
            while data := await client_in.read(65536):
                if self.armed and b"COMMIT" in data:
                    self.armed = False
                    committing.set()
                server.write(data)
                await server.drain()
            server.close()

        async def downstream() -> None:
            while data := await server_in.read(65536):
                if committing.is_set():
                    # The COMMIT's answer (asyncpg waits for each answer before it sends
                    # the next statement): dropped with the connection.
                    self.cut += 1
                    client.transport.abort()
                    server.transport.abort()
                    return
                client.write(data)
                await client.drain()
            client.close()

        await asyncio.gather(upstream(), downstream(), return_exceptions=True)


@pytest.fixture
async def cut_store(own_cluster: pg.Cluster) -> AsyncIterator[tuple[PostgresStore, CommitCutter]]:
    """A store that reaches the server through a CommitCutter."""
    cutter = CommitCutter(own_cluster.port)
    proxy = await cutter.serve()
    port = proxy.sockets[0].getsockname()[1]
    with own_cluster.fresh_schema() as dsn:
        opened = PostgresStore(dsn.replace(f":{own_cluster.port}/", f":{port}/"))
        await opened.open()
        try:
            yield opened, cutter
        finally:
            await opened.close()
            cutter.close()
            proxy.close()


async def committed_unseen(cutter: CommitCutter, write: Awaitable[T]) -> None:
    """Run `write` with its COMMIT's answer lost: it raises DatabaseUnavailable."""
    cutter.armed, cut = True, cutter.cut
    with pytest.raises(DatabaseUnavailable, match="lost the connection"):
        await write
    assert cutter.cut == cut + 1


async def test_a_repeated_write_whose_commit_answer_was_lost_counts_once(
    cut_store: tuple[PostgresStore, CommitCutter],
) -> None:
    store, cutter = cut_store
    job_id = await running_job(store, 8, max_receive_count=2)
    grant = await store.lease(job_id, 6, 60)
    done = [Success(lease.seq, lease.token, 0.5, b'"r"') for lease in grant[:2]]
    failed = Failure(grant[2].seq, grant[2].token, "boom", None)
    released = [(lease.seq, lease.token) for lease in grant[3:5]]
    renewed = [(job_id, grant[5].seq, grant[5].token)]

    # succeed (its group commit), fail, release, renew: each committed though it raised,
    # then repeated (the store connects again) to no further effect.
    await committed_unseen(cutter, store.succeed(job_id, done))
    assert await store.succeed(job_id, done) == 0
    await committed_unseen(cutter, store.fail(job_id, failed, 2))
    assert await store.fail(job_id, failed, 2) is None
    await committed_unseen(cutter, store.release(job_id, released))
    assert await store.release(job_id, released) == 0
    await committed_unseen(cutter, store.renew(renewed, 600))
    assert await store.renew(renewed, 600) == 1
    counts = await store.counts(job_id)
    # 2 succeeded; 1 failed attempt; 2 released + the failed one + 2 never leased queued.
    assert (counts.succeeded, counts.failed_attempts, counts.leased) == (2, 1, 1)
    assert (counts.queued, counts.dead) == (5, 0)
    # The renewal happened: the lease outlives a sweep ten minutes from now minus one.
    assert await store.expire_leases(time.time() + 590, job_ids=[job_id]) == []


async def test_a_lease_whose_commit_answer_was_lost_is_never_granted_twice(
    cut_store: tuple[PostgresStore, CommitCutter],
) -> None:
    store, cutter = cut_store
    job_id = await running_job(store, 4, max_receive_count=2)
    # The lost grant's batches stay leased to no one until their lease expires...
    await committed_unseen(cutter, store.lease(job_id, 2, 0.001))
    retried = await store.lease(job_id, 2, 60)
    assert [lease.seq for lease in retried] == [3, 4]
    assert (await store.counts(job_id)).leased == 4
    # ...then they are charged an attempt, as a lost worker's are, and leased again.
    expired = await store.expire_leases(time.time() + 1, job_ids=[job_id])
    assert sorted((seq, state) for _, seq, state in expired) == [
        (1, BatchState.QUEUED),
        (2, BatchState.QUEUED),
    ]
    again = await store.lease(job_id, 4, 60)
    assert [(lease.seq, lease.attempt) for lease in again] == [(1, 2), (2, 2)]
    assert (await store.counts(job_id)).leased == 4
