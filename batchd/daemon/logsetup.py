"""The daemon's own log on stdout: JSON lines for journald and programs, or lines for a
person at a terminal (``log_format``: auto picks by where stdout goes)."""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Literal, TextIO

from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["auto", "human", "json"]

# The record that says the daemon is up; a person at a terminal gets it as one sentence.
READY_MESSAGE = "batchd ready"
# What systemd sets in a service's environment: its log goes to the journal, as JSON.
SYSTEMD_VARIABLES = ("JOURNAL_STREAM", "INVOCATION_ID")
# The attributes every LogRecord has: anything else on a record came in `extra`.
_STANDARD_ATTRIBUTES = frozenset(
    [*vars(logging.LogRecord("", 0, "", 0, "", None, None)), "message", "asctime", "taskName"]
)


def resolve_format(
    log_format: LogFormat, stream: TextIO, environ: dict[str, str] | None = None
) -> Literal["human", "json"]:
    """auto: human on a terminal, JSON under systemd or into a pipe or a file."""
    if log_format != "auto":
        return log_format
    env = os.environ if environ is None else environ
    if any(env.get(name) for name in SYSTEMD_VARIABLES):
        return "json"
    return "human" if stream.isatty() else "json"


class HumanFormatter(logging.Formatter):
    """``time level logger: message key=value ...``; the ready record as one sentence."""

    def __init__(self) -> None:
        super().__init__(datefmt="%Y-%m-%d %H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        fields = {
            key: value for key, value in vars(record).items() if key not in _STANDARD_ATTRIBUTES
        }
        message = record.getMessage()
        if message == READY_MESSAGE and "url" in fields:
            return (
                f"batchd listening on {fields['url']} — dashboard at /, "
                f"state in {fields.get('state_dir')}"
            )
        line = " ".join(
            [
                self.formatTime(record, self.datefmt),
                f"{record.levelname:<7}",
                f"{record.name}:",
                message,
                *(f"{key}={_value_text(value)}" for key, value in fields.items()),
            ]
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def _value_text(value: object) -> str:
    """A value as one token: quoted (JSON) when it holds a space, a quote or an equals sign."""
    if isinstance(value, str):
        if value and not any(c.isspace() or c in "\"'=" for c in value):
            return value
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool | int | float) or value is None:
        return json.dumps(value)
    return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))


def configure_logging(level: str, log_format: LogFormat = "auto") -> None:
    handler = logging.StreamHandler(sys.stdout)
    if resolve_format(log_format, sys.stdout) == "human":
        handler.setFormatter(HumanFormatter())
    else:
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(process)d",
                rename_fields={"name": "logger"},
            )
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log repeats what the request handlers already tell.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
