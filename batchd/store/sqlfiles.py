"""SQL kept in files: named statements and numbered migrations, for any SQL backend.

A statements file holds statements under ``-- name: <name>`` lines (procrastinate's
``sql/queries.sql`` is the model); a statement runs to the next name, its comment lines
dropped. In a statement, ``{active_statuses}`` and ``{terminal_statuses}`` become the
quoted lists of :mod:`batchd.statuses` (the one place they are defined), and ``{<name>}``
the text of another statement (a column list, say). Migrations are ``NNNN_<what>.sql``,
numbered from 1 without gaps: the last number is the schema version.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from importlib import resources
from importlib.resources.abc import Traversable

from batchd.statuses import ACTIVE_STATUSES, TERMINAL_STATUSES, JobStatus

_NAME_LINE = re.compile(r"^-- name: (\w+)[ \t]*$", re.MULTILINE)
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_MIGRATION_FILE = re.compile(r"(\d{4})_\w+\.sql")
_NAMED_STATEMENT = re.compile(r"(?i:sql)\.(\w+)")


def _quoted(statuses: Iterable[JobStatus]) -> str:
    return ", ".join(f"'{status}'" for status in statuses)


# Terminal statuses in the enum's order, so that the text is the same on every run.
STATUS_LISTS = {
    "active_statuses": _quoted(ACTIVE_STATUSES),
    "terminal_statuses": _quoted(s for s in JobStatus if s in TERMINAL_STATUSES),
}


def _files(package: str, folder: str) -> list[Traversable]:
    entries = resources.files(package).joinpath(folder).iterdir()
    return sorted((entry for entry in entries if entry.name.endswith(".sql")), key=_name)


def _name(entry: Traversable) -> str:
    return entry.name


def _without_comments(text: str) -> str:
    return "\n".join(
        line for line in text.strip().splitlines() if not line.lstrip().startswith("--")
    )


def parse(text: str) -> dict[str, str]:
    """The named statements of one file (the preamble before the first name is the file's
    own comment)."""
    parts = _NAME_LINE.split(text)
    named: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in named:
            raise ValueError(f"query {name} is defined twice")
        named[name] = _without_comments(body)
    return named


class NamedQueries:
    """Every statement of the ``.sql`` files in one folder of a package, filled in."""

    def __init__(self, package: str, folder: str) -> None:
        raw: dict[str, str] = {}
        for entry in _files(package, folder):
            for name, statement in parse(entry.read_text()).items():
                if name in raw:
                    raise ValueError(f"query {name} is defined twice ({entry.name})")
                raw[name] = statement
        values = {**STATUS_LISTS, **raw}
        self._parts = {part for text in raw.values() for part in _PLACEHOLDER.findall(text)}
        self.statements = {
            name: _PLACEHOLDER.sub(lambda match: values[match.group(1)], text)
            for name, text in raw.items()
        }
        self._package = package
        self.sql = Statements(self.statements)

    def unused(self) -> set[str]:
        """Statements no code names (as ``SQL.<name>`` or ``self._sql.<name>``, in the
        backend's package or the shared modules of ``batchd.store``) and none includes as
        a part (tests want none). Reads the source: for tests, never the daemon."""
        named: set[str] = set()
        for package in (self._package, __name__.rpartition(".")[0]):
            for entry in resources.files(package).iterdir():
                if entry.name.endswith(".py"):
                    named.update(_NAMED_STATEMENT.findall(entry.read_text()))
        return set(self.statements) - named - self._parts


class Statements:
    """A backend's statements as attributes (``SQL.job_by_id``): one dictionary look-up,
    like a module constant's, and the roles shared by both backends (``self._sql``) name
    them the same way."""

    def __init__(self, statements: dict[str, str]) -> None:
        self.__dict__.update(statements)

    def __getattr__(self, name: str) -> str:
        # Only reached for a name no file defines; declares every statement a str to mypy.
        raise AttributeError(f"no statement is called {name}")


def migrations(package: str, folder: str) -> list[tuple[str, str]]:
    """(file name, text) of each migration, in order; refused when numbered with a gap."""
    files = [
        (entry.name, entry.read_text())
        for entry in _files(package, folder)
        if _MIGRATION_FILE.fullmatch(entry.name)
    ]
    for number, (name, _) in enumerate(files, start=1):
        if int(name[:4]) != number:
            raise ValueError(f"migration {name} is out of order: {number:04d} expected")
    return files
