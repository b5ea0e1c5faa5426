"""The parts of the store's roles that both SQL backends run alike, each over its own
statements: leasing and lease expiry, the successes' group commit, a failed attempt, the
reads, deployed APIs and pruning. Each mixin runs over :class:`batchd.store.sqlcore.
SqlCore`; a backend's roles add them to its core and keep what is their own dialect. On
the hot path the per-batch work (fresh batch rows, storing successes that carry a
result, a job's counts, the transaction) stays in each backend, so none of it goes
through an extra call here."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar, Generic, TypeVar

from batchd.constants import PRUNE_CHUNK_ROWS, STREAM_PAGE_ROWS
from batchd.store.groupcommit import GroupCommit
from batchd.store.records import (
    ApiRecord,
    BatchState,
    DeadLetter,
    Failure,
    JobRecord,
    Lease,
    ListedJob,
    MetricCounts,
    Result,
)
from batchd.store.rows import (
    JOB_COLUMN_COUNT,
    SEQ_BITS,
    SEQ_MASK,
    ChunkCache,
    Run,
    api_record,
    batch_counts,
    batch_range,
    job_record,
)
from batchd.store.sqlcore import SqlCore


class SqlApis(SqlCore[Any, Any]):
    """The ``ApiStore`` role: deployed API versions."""

    # Whether project archives are kept (see ApiStore.save_api_archive). A database several
    # daemons share must; on SQLite an archive per deploy (up to max_project_size) would
    # only grow the file.
    _keeps_archives: ClassVar[bool] = False

    async def add_api_version(
        self, name: str, spec: dict[str, Any], dotenv: dict[str, str]
    ) -> ApiRecord:
        now = time.time()
        async with self._transaction() as db:
            await self._lock_api_versions(db, name)
            latest = await self._scalar(db, self._sql.latest_api_version, name)
            version = (latest or 0) + 1
            values = (name, version, json.dumps(spec), json.dumps(dotenv), now)
            await self._exec(db, self._sql.insert_api, *values)
        return ApiRecord(name=name, version=version, spec=spec, dotenv=dotenv, created_at=now)

    async def save_api_archive(self, name: str, digest: str, archive: bytes) -> None:
        if self._keeps_archives:
            # In a transaction of its own on a pool connection, not the writer's: 32 MiB
            # written there held this node's write lock (its leases and outcomes) for most
            # of a second. The same content deployed again finds its archive there.
            await self._exec(self._r, self._sql.insert_api_archive, name, digest, archive)

    async def api_archive(self, name: str, digest: str) -> bytes | None:
        if not self._keeps_archives:
            return None
        archive = await self._scalar(self._r, self._sql.api_archive, name, digest)
        return None if archive is None else bytes(archive)

    async def get_api(self, name: str, version: int | None = None) -> ApiRecord | None:
        if version is None:
            rows = await self._rows(self._r, self._sql.live_api, name)
        else:
            rows = await self._rows(self._r, self._sql.api_version, name, version)
        return api_record(rows[0]) if rows else None

    async def list_apis(self) -> list[ApiRecord]:
        return [api_record(row) for row in await self._rows(self._r, self._sql.live_apis)]

    async def api_versions(self, name: str) -> list[ApiRecord]:
        return [api_record(row) for row in await self._rows(self._r, self._sql.api_versions, name)]

    async def delete_api(self, name: str) -> bool:
        async with self._transaction() as db:
            deleted = await self._exec(db, self._sql.delete_api, time.time(), name) > 0
            # Its pause goes with it: deployed again, it starts afresh.
            await self._exec(db, self._sql.resume_api, name)
            if self._keeps_archives:
                # Its archives go too, unless an unfinished job of it may still need one.
                await self._exec(db, self._sql.prune_api_archives, name)
        return deleted


class SqlLeases(SqlCore[Any, Any]):
    """Leasing and expiring, of the ``LeaseStore`` role: never-leased batches get their rows
    (``_lease_fresh``), and leases are released and renewed, in each backend's own way."""

    def __init__(self) -> None:
        # Reached from the backend's core, which takes the arguments.
        super().__init__()
        self._chunks = ChunkCache()

    async def _lease_fresh(
        self, db: Any, key: int, limit: int, token: int, lease_timeout: float
    ) -> list[tuple[int, int, bytes]]:
        """Rows for up to `limit` never-leased batches, leased: (id, attempts, payload)."""
        raise NotImplementedError

    async def _insert_expiries(self, db: Any, rows: list[Any], reason: str) -> None:
        """A failure row for each expired lease of `rows` (id, state, attempts)."""
        raise NotImplementedError

    async def lease(self, job_id: str, limit: int, lease_timeout: float) -> list[Lease]:
        """Lease up to `limit` queued batches of a running job, oldest first: re-queued
        rows (which another transaction is leasing are skipped, where the database can
        tell), then never-leased ones from the chunks."""
        key = await self._key(job_id)
        first, last = batch_range(key)
        token = self._new_token()
        async with self._transaction() as db:
            # One round trip: the queued rows come back from the statement that leases them.
            params = (token, time.time() + lease_timeout, first, last, limit, key)
            rows = await self._rows(db, self._sql.lease_queued, *params)
            if len(rows) < limit:
                rows += await self._lease_fresh(db, key, limit - len(rows), token, lease_timeout)
            if rows:
                await self._count(db, key, queued=-len(rows), leased=len(rows))
        leases = [Lease(job_id, row[0] & SEQ_MASK, token, row[1], row[2]) for row in rows]
        leases.sort(key=lambda lease: lease.seq)
        return leases

    async def expire_leases(
        self,
        now: float,
        reason: str = "lease expired: the worker holding it was lost",
        job_ids: Sequence[str] | None = None,
    ) -> list[tuple[str, int, BatchState]]:
        """Every lease past its expiry counts as a failed attempt (its worker is gone).

        Only unfinished jobs hold leases (a job's end gives its leases back); `job_ids`
        narrows the search further. Leased batches are found by each job's id range, not
        an index, so the usual path of a batch touches no index."""
        wanted = None if job_ids is None else set(job_ids)
        expired: list[tuple[str, int, BatchState]] = []
        async with self._transaction() as db:
            for key, job_id, max_receive_count in await self._rows(
                db, self._sql.jobs_holding_leases
            ):
                if wanted is not None and job_id not in wanted:
                    continue
                first, last = batch_range(key)
                params = (max_receive_count, first, last, now, *self._own_tokens())
                rows = await self._rows(db, self._sql.expire_job_leases, *params)
                if not rows:
                    continue
                await self._insert_expiries(db, rows, reason)
                dead = sum(row[1] == BatchState.DEAD for row in rows)
                await self._count(
                    db,
                    key,
                    leased=-len(rows),
                    queued=len(rows) - dead,
                    dead=dead,
                    failures=len(rows),
                )
                expired += [(job_id, row[0] & SEQ_MASK, BatchState(row[1])) for row in rows]
        return expired


WithResult = TypeVar("WithResult")


class SqlSuccesses(SqlCore[Any, Any], Generic[WithResult]):
    """Successes, of the ``OutcomeStore`` role, by group commit: successes reported while a
    commit is under way wait for the next one and share it, so a synchronous=FULL fsync
    is paid once per group, not once per batch, and a caller returns only once its rows
    are durable. A backend's role class names this mixin before its core, so that closing
    drains the group first. Each backend gathers the successes that carry a result as its
    statement binds them (``succeed``) and stores them (``_store_with_result``): one
    coroutine a report, as before this was shared, and none without a result."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._successes = GroupCommit[tuple[int, WithResult | None, list[Run]]](
            self._commit_successes
        )

    async def close(self) -> None:
        await self._successes.drain()
        await super().close()

    async def _store_with_result(self, db: Any, with_result: WithResult) -> tuple[int, float]:
        """Mark successes that hold a current lease token: (how many, their seconds)."""
        raise NotImplementedError

    async def _commit_successes(
        self, reports: list[tuple[int, WithResult | None, list[Run]]]
    ) -> list[int]:
        """Each report (job key, successes with a result, runs of those without) in one
        transaction; the successes accepted of each.

        Jobs in key order: every transaction that moves several jobs' counters takes their
        rows in that order, so daemons sharing a database never wait on each other in a
        circle."""
        accepted_each = [0] * len(reports)
        async with self._transaction() as db:
            for index in sorted(range(len(reports)), key=lambda i: reports[i][0]):
                key, with_result, runs = reports[index]
                accepted, seconds = 0, 0.0
                if with_result is not None:
                    accepted, seconds = await self._store_with_result(db, with_result)
                for run in runs:
                    marked = await self._exec(db, self._sql.succeed_run, *run)
                    accepted += marked
                    seconds += run[0] * marked
                if accepted:
                    await self._count(
                        db, key, leased=-accepted, succeeded=accepted, seconds=seconds
                    )
                accepted_each[index] = accepted
        return accepted_each


class SqlFailures(SqlCore[Any, Any]):
    """A failed attempt, of the ``OutcomeStore`` role (successes: :class:`SqlSuccesses`)."""

    async def fail(
        self, job_id: str, failure: Failure, max_receive_count: int
    ) -> BatchState | None:
        """Record a failed attempt; the batch is re-queued or, out of attempts, dead-lettered.

        Returns the batch's new state, or None when the lease token was stale."""
        first, _ = batch_range(await self._key(job_id))
        batch = first + failure.seq
        async with self._transaction() as db:
            rows = await self._rows(
                db, self._sql.fail_batch, max_receive_count, batch, failure.token
            )
            if not rows:
                return None
            state, attempts = rows[0][0], rows[0][1]
            dead = state == BatchState.DEAD
            await self._count(
                db, batch >> SEQ_BITS, leased=-1, queued=1 - dead, dead=dead, failures=1
            )
            error, traceback = (
                self._stored_text(failure.error),
                self._stored_text(failure.traceback),
            )
            values = (batch, attempts, error, traceback, time.time())
            await self._exec(db, self._sql.insert_failure, *values)
        return BatchState(state)


class SqlPruning(SqlCore[Any, Any]):
    """Finished jobs found and pruned, of the ``RetentionStore`` role (keeping the files
    or tables bounded is each backend's own)."""

    async def prunable_jobs(self, ended_before: float) -> list[JobRecord]:
        rows = await self._rows(self._r, self._sql.prunable_jobs, ended_before)
        return [job_record(row) for row in rows]

    async def prune_job(self, job_id: str) -> int:
        """Delete a finished job's batches and failures, a chunk per transaction so the
        write lock is never held for long; the job's own row stays, marked pruned."""
        first, last = batch_range(await self._key(job_id))
        deleted = 0
        while True:
            async with self._transaction() as db:
                sql = self._sql
                removed = await self._exec(db, sql.delete_batches, first, last, PRUNE_CHUNK_ROWS)
                removed += await self._exec(db, sql.delete_failures, first, last, PRUNE_CHUNK_ROWS)
                removed += await self._exec(db, sql.delete_chunks, first, last)
                if removed == 0:
                    await self._exec(db, sql.mark_pruned, time.time(), job_id)
            deleted += removed
            if removed == 0:
                return deleted


class SqlReads(SqlCore[Any, Any]):
    """The ``ReadStore`` role but a job's counts (a status read: each backend's own)."""

    async def get_job(self, job_id: str) -> JobRecord | None:
        rows = await self._rows(self._r, self._sql.job_by_id, job_id)
        return job_record(rows[0]) if rows else None

    async def active_jobs(self) -> list[JobRecord]:
        # What the daemon resumes must include the last commit.
        return [job_record(row) for row in await self._rows(self._latest, self._sql.active_jobs)]

    def _page_params(self, api_names: Sequence[str], before: str | None) -> tuple[Any, Any]:
        """The API names and the `before` of a jobs page, as the statement binds them."""
        raise NotImplementedError

    def _array(self, values: Sequence[str]) -> Any:
        """A list of strings as the backend's statements bind one."""
        raise NotImplementedError

    async def list_jobs_page(
        self,
        api_names: Sequence[str],
        limit: int,
        before: str | None = None,
        active_only: bool = False,
        statuses: Sequence[str] | None = None,
    ) -> list[ListedJob]:
        """Newest first, each with its counts; `before` is the last job id of the previous
        page (ids sort by age); `statuses`, when given, keeps the jobs of those only."""
        if not api_names or statuses == []:
            return []
        params = [*self._page_params(api_names, before), limit]
        if statuses is not None:
            sql = self._sql.status_jobs_page
            params.append(self._array(statuses))
        else:
            sql = self._sql.active_jobs_page if active_only else self._sql.jobs_page
        rows = await self._rows(self._r, sql, *params)
        return [ListedJob(job_record(row), batch_counts(row[JOB_COLUMN_COUNT:])) for row in rows]

    async def metric_counts(self) -> MetricCounts:
        """Jobs by status, and the queued and leased batches of unfinished jobs by API."""
        statuses = await self._rows(self._r, self._sql.jobs_by_status)
        queue: dict[str, list[int]] = {}
        for api, queued, leased in await self._rows(self._r, self._sql.queue_depth):
            totals = queue.setdefault(api, [0, 0])
            totals[0] += queued
            totals[1] += leased
        return MetricCounts(
            jobs_by_status={status: count for status, count in statuses},
            queued_by_api={api: totals[0] for api, totals in queue.items()},
            leased_by_api={api: totals[1] for api, totals in queue.items()},
        )

    async def queue_depth(self) -> tuple[int, int]:
        rows = await self._rows(self._r, self._sql.queue_depth)
        return sum(row[1] for row in rows), sum(row[2] for row in rows)

    async def dead_letters(self, job_id: str) -> AsyncIterator[DeadLetter]:
        async for row in self._pages(job_id, self._sql.dead_letters_page):
            error, traceback = self._loaded_text(row[3]), self._loaded_text(row[4])
            yield DeadLetter(row[0] & SEQ_MASK, bytes(row[1]), row[2], error, traceback)

    async def results(self, job_id: str) -> AsyncIterator[Result]:
        async for row in self._pages(job_id, self._sql.results_page):
            yield Result(row[0] & SEQ_MASK, bytes(row[1]))

    async def _pages(self, job_id: str, sql: str) -> AsyncIterator[Any]:
        """Rows of a job's batches a page at a time (keyset paging on the batch id), so a
        million results stream without holding a read snapshot, a cursor or the lot in
        memory. `sql` takes (after_id, last_id, limit) and selects the id first."""
        first, last = batch_range(await self._key(job_id))
        after = first - 1
        while True:
            rows = await self._rows(self._r, sql, after, last, STREAM_PAGE_ROWS)
            for row in rows:
                yield row
            if len(rows) < STREAM_PAGE_ROWS:
                return
            after = rows[-1][0]
