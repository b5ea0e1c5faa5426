"""The handler's structured logger, worker side (standard library only).

``from batchd import logger`` gives a ``logging.Logger`` whose records become one
JSON object per line: ``asctime``, ``levelname``, ``message``, ``process``,
``labels`` (``batchID`` while a batch is being handled) and the keys of ``extra``
flattened one level. Inside a worker the lines go to the daemon over a pipe (the
daemon adds the API, job and worker labels and stores them); elsewhere, to stderr.

``asctime``, ``levelname``, ``message``, ``labels`` and ``process`` are reserved: an
``extra`` key with one of those names is kept, renamed ``extra_<name>``, and never
overrides the metadata.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import time
import traceback
from typing import Any, TextIO

from batchd.constants import ENV_LOG_FD, MAX_LOG_LINE_BYTES

RESERVED = frozenset({"asctime", "levelname", "message", "labels", "process"})
LOGGER_NAME = "batchd.handler"

# Attributes every LogRecord has; anything else on a record came from `extra`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

# The labels of what the worker is doing now; the worker sets batchID around each batch.
labels: dict[str, Any] = {}


def format_time(created: float) -> str:
    local = time.localtime(created)
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', local)},{int(created * 1000) % 1000:03d}"


class _HandlerLogger(logging.Logger):
    def makeRecord(
        self,
        name: str,
        level: int,
        fn: str,
        lno: int,
        msg: object,
        args: Any,
        exc_info: Any,
        func: str | None = None,
        extra: Any = None,
        sinfo: str | None = None,
    ) -> logging.LogRecord:
        safe_extra = None
        if extra is not None:
            safe_extra = {
                (f"extra_{key}" if key in RESERVED or key in _RECORD_ATTRIBUTES else key): value
                for key, value in extra.items()
            }
        return super().makeRecord(
            name, level, fn, lno, msg, args, exc_info, func, safe_extra, sinfo
        )


def record_to_dict(record: logging.LogRecord) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "asctime": format_time(record.created),
        "levelname": record.levelname,
        "message": record.getMessage(),
        "process": record.process,
        "labels": dict(labels),
    }
    for key, value in vars(record).items():
        if key not in _RECORD_ATTRIBUTES:
            entry[key] = value
    if record.exc_info:
        entry["exc_info"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
    return entry


class JsonLinesHandler(logging.Handler):
    """One JSON object per line; a line over the limit is replaced by a short warning."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write_entry(record_to_dict(record))
        except Exception:
            self.handleError(record)

    def write_entry(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, default=str, ensure_ascii=False)
        try:
            size = len(line.encode())
        except UnicodeEncodeError:
            # A lone surrogate (text decoded with surrogateescape): as a JSON escape it
            # can travel, and the daemon spells it out when it stores the record.
            line = json.dumps(entry, default=str)
            size = len(line)
        if size > MAX_LOG_LINE_BYTES:
            line = json.dumps(
                {
                    "asctime": entry["asctime"],
                    "levelname": "WARNING",
                    "message": f"log record dropped: over {MAX_LOG_LINE_BYTES} bytes",
                    "process": entry["process"],
                    "labels": entry["labels"],
                }
            )
        self.acquire()
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        finally:
            self.release()


class PrintedLines(io.TextIOBase):
    """Stands in for sys.stdout / sys.stderr in a worker: each printed line becomes a log
    record labelled with the batch being handled when it was printed."""

    def __init__(self, handler: JsonLinesHandler, stream: str, level: str) -> None:
        self._handler = handler
        self._stream = stream
        self._level = level
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self._emit(line)
        return len(text)

    def flush(self) -> None:
        # A line is a record: an unfinished one waits for its newline (or for close).
        return None

    def finish_line(self) -> None:
        """Emit an unfinished last line. The stream stays open: the interpreter may still
        print a traceback through it on the way out."""
        if self._partial:
            self._emit(self._partial)
            self._partial = ""

    def _emit(self, line: str) -> None:
        self._handler.write_entry(
            {
                "asctime": format_time(time.time()),
                "levelname": self._level,
                "message": line,
                "process": os.getpid(),
                "labels": dict(labels),
                "stream": self._stream,
            }
        )


def capture_prints() -> tuple[PrintedLines, PrintedLines]:
    """Route this process's Python-level prints into the log (worker only)."""
    handler = next(h for h in logger.handlers if isinstance(h, JsonLinesHandler))
    out = PrintedLines(handler, "stdout", "INFO")
    err = PrintedLines(handler, "stderr", "WARNING")
    sys.stdout, sys.stderr = out, err
    return out, err


def _make_logger() -> logging.Logger:
    previous = logging.getLoggerClass()
    logging.setLoggerClass(_HandlerLogger)
    try:
        logger = logging.getLogger(LOGGER_NAME)
    finally:
        logging.setLoggerClass(previous)
    if not logger.handlers:
        fd = os.environ.get(ENV_LOG_FD)
        stream = os.fdopen(int(fd), "w", encoding="utf-8", closefd=False) if fd else sys.stderr
        logger.addHandler(JsonLinesHandler(stream))
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
    return logger


logger = _make_logger()
