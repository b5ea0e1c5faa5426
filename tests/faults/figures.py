"""Figures of the fault scenarios, and RESULTS.md written from them after a full run."""

from __future__ import annotations

import os
import platform
import re
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests import pg

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


@dataclass
class Row:
    nodeid: str
    title: str
    bar: str
    figures: dict[str, Any] = field(default_factory=dict)
    outcome: str = "not run"
    seconds: float = 0.0


class Registry:
    """One row per test, in the order the tests ran."""

    def __init__(self) -> None:
        self.rows: dict[str, Row] = {}

    def row(self, nodeid: str, doc: str | None) -> Row:
        if nodeid not in self.rows:
            title, bar = split_doc(doc or nodeid)
            if nodeid.endswith("]") and "[" in nodeid:
                title += " [" + nodeid[nodeid.rindex("[") + 1 : -1] + "]"
            self.rows[nodeid] = Row(nodeid, title, bar)
        return self.rows[nodeid]

    def outcome(self, nodeid: str, doc: str | None, outcome: str, seconds: float) -> None:
        row = self.row(nodeid, doc)
        # A failure in teardown still fails a test that passed its call.
        if row.outcome in ("not run", "passed") or outcome in ("FAILED", "error"):
            row.outcome = outcome
        row.seconds += seconds


def split_doc(doc: str) -> tuple[str, str]:
    """First line: the scenario's title; the rest: its pass bar, as one line."""
    lines = [line.strip() for line in doc.strip().splitlines()]
    title = lines[0]
    bar = " ".join(line for line in lines[1:] if line)
    return title, bar


def scenario_key(row: Row) -> tuple[int, str]:
    match = re.match(r"(\d+)(\w*)\.", row.title)
    return (int(match.group(1)), match.group(2)) if match else (10**6, row.title)


def machine() -> dict[str, str]:
    return {
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": postgresql_version(),
        "kernel": platform.release(),
        "platform": platform.machine(),
    }


def postgresql_version() -> str:
    """The version of the PostgreSQL the cluster scenarios start (tests/pg.py)."""
    try:
        done = subprocess.run(
            [str(pg.BINARIES / "postgres"), "--version"], capture_output=True, text=True
        )
    except OSError:
        return "not installed"
    return done.stdout.split("(PostgreSQL)")[-1].strip().split(" ")[0] or "unknown"


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    return str(value)


def render(rows: list[Row], mode: str, seed: int, total_seconds: float) -> str:
    info = machine()
    when = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    lines = [
        "# batchd fault-injection results",
        "",
        "Written by `make faults` (`BATCHD_FAULTS=full pytest tests/faults`); do not edit by "
        "hand. Short runs (`make test`) never rewrite this file.",
        "",
        f"- date: {when}",
        f"- machine: {info['cores']} cores ({info['platform']}), Linux {info['kernel']}",
        f"- Python {info['python']}, SQLite {info['sqlite']}, PostgreSQL {info['postgresql']}",
        f"- mode: {mode}; {len(rows)} scenarios in {total_seconds:.0f} s; "
        f"random kill moments from BATCHD_FAULTS_SEED={seed}",
        f"- command: `pytest {' '.join(sys.argv[1:])}`",
        "",
        "| # | scenario | pass bar | figures | result | s |",
        "|---|---|---|---|---|---|",
    ]
    for row in sorted(rows, key=scenario_key):
        number, _, title = row.title.partition(". ")
        if not title:
            number, title = "", row.title
        figures = "; ".join(f"{k} = {format_value(v)}" for k, v in row.figures.items())
        cells = [number, title, row.bar, figures or "-", row.outcome, f"{row.seconds:.0f}"]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    lines.append("")
    return "\n".join(lines)


def write(
    rows: list[Row], mode: str, seed: int, total_seconds: float, path: Path = RESULTS
) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(render(rows, mode, seed, total_seconds))
    tmp.replace(path)
