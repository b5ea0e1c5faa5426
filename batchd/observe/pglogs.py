"""Job logs on a shared PostgreSQL database: every node's lines of a job in one table
(:class:`batchd.store.postgres.joblogs.JobLogTable`), so any node serves `GET logs`
with all of them, in one order, and a lost node's lines stay readable.

Stored rather than streamed from the node that ran the worker: daemons share nothing
but the database, so no node has to reach another, or be up, for its lines to be read.

A worker's record must never wait on the database: `write` encodes it (the line rule of
the log files: :func:`batchd.observe.joblogs.encode_record`) and queues it in memory, and
one background task stores what is queued every ``FLUSH_INTERVAL`` (sooner when a lot is
queued, or a job's last writer is done), on the table's own connection. The queue is
bounded: while the database is down, what fits waits and is retried; what does not is
dropped and counted, as a full disk drops a log file's records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from batchd.constants import LOG_FOLLOW_POLL_INTERVAL
from batchd.observe.joblogs import LogRead, Writers, encode_record, with_cursor
from batchd.store.postgres.joblogs import JobLogTable

log = logging.getLogger("batchd.joblogs")

# Seconds between flushes: how late a line reaches the table when all is well.
FLUSH_INTERVAL = 0.15
# Bytes of queued lines that start a flush before its time, and that one flush's
# transaction stores at most (a line may be up to 5 MB).
FLUSH_BYTES, FLUSH_MAX_BYTES = 1 << 20, 8 << 20
# Bytes of lines queued for the database at most; past it records are dropped.
QUEUE_BYTES = 64 << 20
# While the database is down, flushes are retried after this long at most (doubling).
RETRY_MAX = 5.0
# How long a read waits for this node's queued lines to be stored first, and the daemon's
# stop for all of them.
READ_FLUSH_TIMEOUT, CLOSE_FLUSH_TIMEOUT = 1.0, 5.0
# A `follow` stream ends once its job has ended and this long has passed since: lines
# another node queued before the end are in the table within a flush.
END_GRACE = 1.0
# One read of the table: rows, and bytes of lines past the first.
READ_ROWS, READ_BYTES = 1000, 4 << 20


class QueueFull(Exception):
    """The database has not taken the lines queued before: this record is dropped."""


class QueuedJobLog:
    """One job's :class:`~batchd.observe.joblogs.JobLog`: records go to the queue."""

    __slots__ = ("_logs", "dropped", "job_id", "users")

    def __init__(self, logs: PostgresJobLogs, job_id: str) -> None:
        self._logs = logs
        self.job_id = job_id
        self.users = 0
        self.dropped = 0

    def write(self, record: dict[str, Any]) -> None:
        self._logs.queue(self.job_id, encode_record(record))


class PostgresJobLogs:
    """The :class:`~batchd.observe.joblogs.JobLogs` of a daemon on PostgreSQL."""

    def __init__(self, table: JobLogTable, queue_bytes: int = QUEUE_BYTES) -> None:
        self.table = table
        self._limit = queue_bytes
        self._queued: deque[tuple[str, bytes]] = deque()
        self._queued_bytes = 0
        # Records ever queued, and ever taken off the queue: one read waits for those
        # queued before it (in order, so a count says which).
        self._queued_total = 0
        self._taken_total = 0
        self._wake = asyncio.Event()
        # Set (and replaced) after each flush, stored or failed.
        self._flushed = asyncio.Event()
        self._writers = Writers(self._queued_log, self._last_released)
        self._closing = False
        self._flusher: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, dsn: str, node: str, queue_bytes: int = QUEUE_BYTES) -> PostgresJobLogs:
        """Lines written on `node`, stored in the database at `dsn` (already migrated)."""
        table = JobLogTable(dsn, node)
        await table.open()
        logs = cls(table, queue_bytes)
        logs._flusher = asyncio.create_task(logs._flush_forever(), name="job-log-flusher")
        return logs

    # -- writing -----------------------------------------------------------------------

    def acquire(self, job_id: str) -> QueuedJobLog:
        return self._writers.acquire(job_id)

    def release(self, job_id: str) -> None:
        self._writers.release(job_id)

    def _queued_log(self, job_id: str) -> QueuedJobLog:
        return QueuedJobLog(self, job_id)

    def _last_released(self, job_log: QueuedJobLog) -> None:
        # The job's last writer is done (it may be ending): its lines go out now.
        self._wake.set()

    def queue(self, job_id: str, line: bytes) -> None:
        if self._queued_bytes + len(line) > self._limit:
            raise QueueFull(f"{self._queued_bytes} bytes of job log lines wait for the database")
        self._queued.append((job_id, line))
        self._queued_bytes += len(line)
        self._queued_total += 1
        if self._queued_bytes >= FLUSH_BYTES:
            self._wake.set()

    async def _flush_forever(self) -> None:
        failing_since: float | None = None
        delay = FLUSH_INTERVAL
        while True:
            if failing_since is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), FLUSH_INTERVAL)
            else:
                # Backing off: a full queue must not turn retries into a busy loop.
                await asyncio.sleep(delay)
            self._wake.clear()
            try:
                await self._flush()
            except Exception as exc:
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.warning(
                        "job log lines cannot be stored; retrying (they wait in memory, "
                        "and past its bound are dropped)",
                        extra={"error": repr(exc)},
                    )
                delay = min(delay * 2, RETRY_MAX)
            else:
                if failing_since is not None:
                    log.info(
                        "job log lines are stored again",
                        extra={"after_seconds": round(time.monotonic() - failing_since, 1)},
                    )
                failing_since, delay = None, FLUSH_INTERVAL
            finally:
                flushed, self._flushed = self._flushed, asyncio.Event()
                flushed.set()

    async def _flush(self) -> None:
        """Store the queue, oldest first; a batch leaves the queue once it is stored."""
        while self._queued:
            batch: list[tuple[str, bytes]] = []
            size = 0
            for item in self._queued:
                if batch and size + len(item[1]) > FLUSH_MAX_BYTES:
                    break
                batch.append(item)
                size += len(item[1])
            await self.table.insert(batch)
            # Only this task takes from the queue; writers append at its other end.
            for _ in batch:
                self._queued.popleft()
            self._queued_bytes -= size
            self._taken_total += len(batch)

    async def _stored(self, timeout: float) -> bool:
        """Wait, `timeout` at most, until the lines queued so far are stored."""
        target = self._queued_total
        deadline = time.monotonic() + timeout
        while self._taken_total < target:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._flusher is None or self._flusher.done():
                return False
            self._wake.set()
            try:
                await asyncio.wait_for(self._flushed.wait(), remaining)
            except TimeoutError:
                return False
        return True

    async def close(self) -> None:
        if not await self._stored(CLOSE_FLUSH_TIMEOUT):
            log.warning(
                "job log lines lost: the database did not take them before the stop",
                extra={"lines": self._queued_total - self._taken_total},
            )
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.table.close()

    # -- reading -----------------------------------------------------------------------

    def close_readers(self) -> None:
        self._closing = True

    async def tail_start(self, job_id: str, lines: int) -> int:
        await self._stored(READ_FLUSH_TIMEOUT)
        return await self.table.tail_start(job_id, lines)

    async def read(self, job_id: str, request: LogRead) -> AsyncIterator[bytes]:
        """Yield the job's lines from id `request.start` (see `tail_start`) in id order,
        whichever node wrote them; with `follow`, poll for more until the job ends."""
        position = request.start
        ended_at: float | None = None
        while True:
            if ended_at is None and await request.ended(self._closing):
                ended_at = time.monotonic()
                # What this node queued before now is read with the rest.
                await self._stored(READ_FLUSH_TIMEOUT)
            rows = await self.table.lines(job_id, position, READ_ROWS, READ_BYTES)
            for row_id, line in rows:
                if request.selects(line):
                    yield with_cursor(line, row_id + 1) if request.cursor else line
            if rows:
                position = rows[-1][0] + 1
                continue
            if ended_at is not None and (
                not request.follow or self._closing or time.monotonic() - ended_at >= END_GRACE
            ):
                return
            await asyncio.sleep(LOG_FOLLOW_POLL_INTERVAL)

    # -- retention ---------------------------------------------------------------------

    async def size(self, job_id: str) -> int:
        return await self.table.size(job_id)

    async def remove(self, job_id: str) -> None:
        await self.table.delete(job_id)
