"""The SQLite store's SQL: named statements and numbered migrations, read once at import.

Each file in ``sql/`` holds statements under ``-- name: <name>`` lines (procrastinate's
``sql/queries.sql`` is the model); a statement runs to the next name. In a statement,
``{active_statuses}`` and ``{terminal_statuses}`` become the quoted lists of
:mod:`batchd.statuses`, and ``{<name>}`` the text of another statement (a column list).
Migrations are ``migrations/NNNN_<what>.sql``, numbered from 1 without gaps; the last
number is the schema version.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from importlib import resources
from importlib.resources.abc import Traversable

from batchd.statuses import ACTIVE_STATUSES, TERMINAL_STATUSES, JobStatus

_PACKAGE = "batchd.store.sqlite"
_NAME_LINE = re.compile(r"^-- name: (\w+)[ \t]*$", re.MULTILINE)
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_MIGRATION_FILE = re.compile(r"(\d{4})_\w+\.sql")


def _quoted(statuses: Iterable[JobStatus]) -> str:
    return ", ".join(f"'{status}'" for status in statuses)


def _generated() -> dict[str, str]:
    # Terminal statuses in the enum's order, so the text is the same on every run.
    terminal = [status for status in JobStatus if status in TERMINAL_STATUSES]
    return {"active_statuses": _quoted(ACTIVE_STATUSES), "terminal_statuses": _quoted(terminal)}


def _files(folder: str) -> list[Traversable]:
    return sorted(
        (entry for entry in resources.files(_PACKAGE).joinpath(folder).iterdir()),
        key=lambda entry: entry.name,
    )


def _without_comments(text: str) -> str:
    return "\n".join(
        line for line in text.strip().splitlines() if not line.lstrip().startswith("--")
    )


def parse(text: str) -> dict[str, str]:
    """The named statements of one file, comments dropped (the preamble before the first
    name is the file's own comment)."""
    parts = _NAME_LINE.split(text)
    named: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in named:
            raise ValueError(f"query {name} is defined twice")
        named[name] = _without_comments(body)
    return named


def _load() -> dict[str, str]:
    raw: dict[str, str] = {}
    for entry in _files("sql"):
        if entry.name.endswith(".sql"):
            for name, statement in parse(entry.read_text()).items():
                if name in raw:
                    raise ValueError(f"query {name} is defined twice ({entry.name})")
                raw[name] = statement
    values = {**_generated(), **raw}

    def expand(match: re.Match[str]) -> str:
        return values[match.group(1)]

    return {name: _PLACEHOLDER.sub(expand, statement) for name, statement in raw.items()}


QUERIES = _load()
_picked: set[str] = set()


def pick(*names: str) -> tuple[str, ...]:
    """The statements called `names`, for a module to bind once at import."""
    _picked.update(names)
    return tuple(QUERIES[name] for name in names)


def unused() -> set[str]:
    """Statements no module picked and none uses as a part (the tests want none)."""
    parts = {name for statement in _raw_texts() for name in _PLACEHOLDER.findall(statement)}
    return set(QUERIES) - _picked - parts


def _raw_texts() -> list[str]:
    return [entry.read_text() for entry in _files("sql") if entry.name.endswith(".sql")]


def statements(script: str) -> list[str]:
    """A script's statements, one by one (a transaction cannot run ``executescript``)."""
    found: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        if not pending and (not line.strip() or line.lstrip().startswith("--")):
            continue
        pending += line
        if sqlite3.complete_statement(pending):
            found.append(pending.strip())
            pending = ""
    if pending.strip():
        raise ValueError(f"an unfinished statement: {pending.strip()[:80]!r}")
    return found


def _migrations() -> list[tuple[str, list[str]]]:
    files = [
        (entry.name, entry.read_text())
        for entry in _files("migrations")
        if _MIGRATION_FILE.fullmatch(entry.name)
    ]
    for number, (name, _) in enumerate(files, start=1):
        if int(name[:4]) != number:
            raise ValueError(f"migration {name} is out of order: {number:04d} expected")
    return [(name, statements(text)) for name, text in files]


# (file name, statements) of migration 1, 2... in order: the schema version is their count.
MIGRATIONS = _migrations()
