"""A worker's output as job log records: its logger's pipe, its stdout and its stderr."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from batchd import constants
from batchd.worker.log import format_time

if TYPE_CHECKING:
    from batchd.pool.process import WorkerProcess

LogSink = Callable[[dict[str, Any]], None]


async def read_pipe(fd: int) -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=constants.MAX_LOG_LINE_BYTES, loop=loop)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader, loop=loop), os.fdopen(fd, "rb", buffering=0)
    )
    return reader


async def _lines(stream: asyncio.StreamReader) -> AsyncIterator[bytes | None]:
    """Lines of a stream; None stands for a line over the limit, which is skipped."""
    skipping = False
    while True:
        try:
            line = await stream.readline()
        except ValueError:
            # asyncio dropped what it buffered of the long line; skip the rest of it too.
            if not skipping:
                yield None
            skipping = True
            continue
        if not line:
            return
        if skipping:
            skipping = not line.endswith(b"\n")
            continue
        yield line


def _dropped(worker: WorkerProcess) -> dict[str, Any]:
    return {
        "asctime": format_time(time.time()),
        "levelname": "WARNING",
        "message": f"log line dropped: over {constants.MAX_LOG_LINE_BYTES} bytes",
        "process": worker.pid,
        "labels": worker.current_labels(),
    }


async def pump_records(
    pipe: Awaitable[asyncio.StreamReader], worker: WorkerProcess, sink: LogSink
) -> None:
    """Records from the handler's logger: JSON objects, labelled by the daemon."""
    stream = await pipe
    async for line in _lines(stream):
        if line is None:
            sink(_dropped(worker))
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not an object")
        except (ValueError, RecursionError):
            # Not a record (a handler wrote to the pipe itself, or nested it too deep):
            # kept as text, and the pipe is still drained.
            record = {
                "asctime": format_time(time.time()),
                "levelname": "INFO",
                "message": line.decode(errors="replace").rstrip("\n"),
                "process": worker.pid,
            }
        worker_labels = record.get("labels")
        record["labels"] = {
            **(worker_labels if isinstance(worker_labels, dict) else {}),
            **worker.labels,
        }
        sink(record)


async def pump_output(
    stream: asyncio.StreamReader, worker: WorkerProcess, sink: LogSink, name: str
) -> None:
    """What the handler prints becomes records too: stdout at INFO, stderr at WARNING."""
    level = "INFO" if name == "stdout" else "WARNING"
    async for line in _lines(stream):
        if line is None:
            sink(_dropped(worker))
            continue
        sink(
            {
                "asctime": format_time(time.time()),
                "levelname": level,
                "message": line.decode(errors="replace").rstrip("\n"),
                "process": worker.pid,
                "labels": worker.current_labels(),
                "stream": name,
            }
        )
