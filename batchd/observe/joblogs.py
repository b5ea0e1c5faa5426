"""Job logs: every record of a job's workers, one JSON object per line.

The daemon is the only writer. Records arrive from each worker's log pipe (the
handler's ``batchd.logger``) and from its stdout and stderr; the daemon adds the
API, job, worker and batch labels and appends them in the order it receives them.

:class:`JobLogs` is what the scheduler, the HTTP layer and retention use. On SQLite the
lines go to one file per job under the state dir (:class:`JobLogFiles`, here); on a
shared PostgreSQL database to a table every node reads (:mod:`batchd.observe.pglogs`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from batchd.constants import LOG_FOLLOW_POLL_INTERVAL
from batchd.wire.textsafe import escape_surrogates_in

log = logging.getLogger("batchd.joblogs")

# The key a cursor-carrying read (LogRead.cursor) adds to each record.
CURSOR_KEY = "log_cursor"
LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


class JobLog(Protocol):
    """Where one job's records go while a worker (or the daemon) writes them."""

    # Records that could not be written (see guarded_writer).
    dropped: int

    def write(self, record: dict[str, Any]) -> None:
        """Append one record; raises when it cannot, leaving nothing of it behind."""


@dataclass(frozen=True)
class LogRead:
    """What a reader asks of a job's log: from where (`start`, 0 or what
    :meth:`JobLogs.tail_start` gave), which lines (`min_level`, `batch_id`), and whether
    to `follow` until `job_ended` says so."""

    min_level: str | None = None
    batch_id: str | None = None
    follow: bool = False
    job_ended: Callable[[], Awaitable[bool]] | None = None
    start: int = 0
    # Each line carries the position after it (`CURSOR_KEY`), for a reader to resume at.
    cursor: bool = False

    async def ended(self, closing: bool) -> bool:
        """Whether what is in the log now is all this read yields (`closing`: the daemon
        is stopping)."""
        return not self.follow or closing or (self.job_ended is not None and await self.job_ended())

    @cached_property
    def _threshold(self) -> int:
        return LEVELS.get(self.min_level.upper(), 0) if self.min_level else 0

    def selects(self, line: bytes) -> bool:
        threshold = self._threshold
        if not threshold and self.batch_id is None:
            return True
        try:
            record = json.loads(line)
        except ValueError:
            return False
        if LEVELS.get(str(record.get("levelname")), 0) < threshold:
            return False
        return self.batch_id is None or record.get("labels", {}).get("batchID") == self.batch_id


class Written(Protocol):
    # The writers holding it (JobLogs.acquire and release count them).
    users: int


WrittenT = TypeVar("WrittenT", bound=Written)


class Writers(Generic[WrittenT]):
    """The job logs being written, each made on its first writer's `acquire` and let go
    (`done`) after its last one's `release`."""

    def __init__(self, make: Callable[[str], WrittenT], done: Callable[[WrittenT], None]) -> None:
        self._make = make
        self._done = done
        self._open: dict[str, WrittenT] = {}

    def acquire(self, job_id: str) -> WrittenT:
        written = self._open.get(job_id)
        if written is None:
            written = self._open[job_id] = self._make(job_id)
        written.users += 1
        return written

    def release(self, job_id: str) -> None:
        written = self._open.get(job_id)
        if written is None:
            return
        written.users -= 1
        if written.users <= 0:
            del self._open[job_id]
            self._done(written)


class JobLogs(Protocol):
    """Every job's log: written while workers run, read (tailed, filtered, followed) by
    `GET logs`, removed when the job is pruned. A read position (`start`) is one that
    `tail_start` gave, or 0 for the first line."""

    def acquire(self, job_id: str) -> JobLog: ...

    def release(self, job_id: str) -> None: ...

    def close_readers(self) -> None:
        """End every `follow` stream: the daemon is stopping."""

    async def close(self) -> None:
        """Write out what is still held back (the daemon has stopped its workers)."""

    async def tail_start(self, job_id: str, lines: int) -> int:
        """The read position of the job's last `lines` lines."""

    def read(self, job_id: str, request: LogRead) -> AsyncIterator[bytes]:
        """The job's lines that `request` selects; with `follow`, until the job ends."""

    async def size(self, job_id: str) -> int:
        """Bytes the job's log takes."""

    async def remove(self, job_id: str) -> None: ...


class JobLogFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self.users = 0
        # Records that could not be written (see guarded_writer).
        self.dropped = 0
        # A log that cannot be created yet (the disk is full) is tried again per record.
        with contextlib.suppress(OSError):
            self._open()

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Unbuffered: each record is one write, so `follow` readers and a crash lose
            # nothing written, and a failed write leaves nothing behind to retry.
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            self._fd = os.open(self.path, flags, 0o666)
        return self._fd

    def write(self, record: dict[str, Any]) -> None:
        """Append one record as a line; OSError (disk full) when it cannot, with nothing
        of it left in the file."""
        data = encode_record(record)
        fd = self._open()
        written = 0
        try:
            while written < len(data):
                written += os.write(fd, data[written:])
        except OSError:
            if written:
                # Half a line would spoil the next one for every reader: take it back.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, os.lseek(fd, 0, os.SEEK_END) - written)
            raise

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def guarded_writer(
    job_log: JobLog, job_id: str, dropped: Callable[[], None]
) -> Callable[[dict[str, Any]], None]:
    """`job_log.write` that never raises: it feeds the readers of a worker's output, and
    a reader that stopped would leave the worker blocked on a full pipe. A record that
    cannot be written is dropped and counted (`dropped`); the job's first drop is said
    once in the daemon's log."""

    def write(record: dict[str, Any]) -> None:
        try:
            job_log.write(record)
        except Exception as exc:
            job_log.dropped += 1
            dropped()
            if job_log.dropped == 1:
                log.warning(
                    "job log record dropped; this job's further drops are only counted "
                    "(batchd_job_log_lines_dropped_total)",
                    extra={"jobID": job_id, "error": repr(exc)},
                )

    return write


def with_cursor(line: bytes, position: int) -> bytes:
    """A record line (JSON object, newline) with `position` added as `CURSOR_KEY`: where a
    read resumes just after it (`start`)."""
    body = line.rstrip(b"\n")
    if not body.endswith(b"}") or body == b"{}":
        return line
    return body[:-1] + b',"%s":%d}\n' % (CURSOR_KEY.encode(), position)


def encode_record(record: dict[str, Any]) -> bytes:
    line = json.dumps(record, ensure_ascii=False, default=str, separators=(",", ":"))
    try:
        return line.encode() + b"\n"
    except UnicodeEncodeError:
        # A lone surrogate came in as a JSON escape: kept, spelled out as text.
        line = json.dumps(
            escape_surrogates_in(record), ensure_ascii=False, default=str, separators=(",", ":")
        )
        return line.encode() + b"\n"


class JobLogFiles:
    """One file per job under the state dir: the logs of a daemon on SQLite."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._writers = Writers(self._file, JobLogFile.close)
        self._closing = False

    def _file(self, job_id: str) -> JobLogFile:
        return JobLogFile(self.path(job_id))

    def acquire(self, job_id: str) -> JobLogFile:
        return self._writers.acquire(job_id)

    def release(self, job_id: str) -> None:
        self._writers.release(job_id)

    def close_readers(self) -> None:
        self._closing = True

    async def close(self) -> None:
        """Nothing is held back: each record is written as it comes."""

    def path(self, job_id: str) -> Path:
        return self.root / f"{job_id}.jsonl"

    async def tail_start(self, job_id: str, lines: int) -> int:
        return await asyncio.to_thread(tail_offset, self.path(job_id), lines)

    async def size(self, job_id: str) -> int:
        try:
            return self.path(job_id).stat().st_size
        except FileNotFoundError:
            return 0

    async def remove(self, job_id: str) -> None:
        self.path(job_id).unlink(missing_ok=True)

    async def read(self, job_id: str, request: LogRead) -> AsyncIterator[bytes]:
        """Yield the job's log lines from byte `request.start` (a line's start, see
        `tail_offset`); with `follow`, keep yielding until the job ends."""
        path = self.path(job_id)
        offset = request.start
        # A position inside a line (a stale or made-up cursor) resumes at the next line.
        partial = offset > 0 and await asyncio.to_thread(_read_from, path, offset - 1, 1) != b"\n"
        pending = b""
        while True:
            ended = await request.ended(self._closing)
            chunk = await asyncio.to_thread(_read_from, path, offset)
            # Where `pending` + the first line start in the file.
            position = offset - len(pending)
            offset += len(chunk)
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                position += len(line) + 1
                if partial:
                    partial = False
                elif line and request.selects(line):
                    yield with_cursor(line, position) if request.cursor else line + b"\n"
            if ended and not chunk:
                return
            if not chunk:
                await asyncio.sleep(LOG_FOLLOW_POLL_INTERVAL)


def tail_offset(path: Path, lines: int, block: int = 64 * 1024) -> int:
    """The byte offset where the file's last `lines` lines start (0 when it has fewer),
    read backwards a block at a time, so a huge log costs only its tail."""
    try:
        with path.open("rb") as log:
            end = log.seek(0, 2)
            position, newlines = end, 0
            while position > 0:
                size = min(block, position)
                position -= size
                log.seek(position)
                chunk = log.read(size)
                # The file's last byte ends the last line; it is not a line start.
                stop = len(chunk) - 1 if position + size == end else len(chunk)
                index = chunk.rfind(b"\n", 0, stop)
                while index != -1:
                    newlines += 1
                    if newlines == lines:
                        return position + index + 1
                    index = chunk.rfind(b"\n", 0, index)
            return 0
    except FileNotFoundError:
        return 0


def _read_from(path: Path, offset: int, size: int = 4 * 1024 * 1024) -> bytes:
    try:
        with path.open("rb") as log:
            log.seek(offset)
            return log.read(size)
    except FileNotFoundError:
        return b""
    except OSError as exc:
        # A position past what the filesystem can hold (a made-up `after`): nothing there.
        if exc.errno == errno.EINVAL:
            return b""
        raise
