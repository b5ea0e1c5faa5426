"""The benchmark suite's quick mode (`python -m bench --quick`) into a temp report: every
workload ran and reported numeric figures. It measures nothing here, it only must work."""

from __future__ import annotations

import importlib.util
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests import pg
from tests.conftest import REPO

WORKLOADS = ["W1", "W1-100", "sync", "W2", "admission", "latency", "memory", "status", "W4"]
# The scale section: on PostgreSQL, each with a note and no figures where it is missing.
SCALE = ["pg-drain", "drivers", "W3"]


def _number(cell: str) -> float:
    return float(cell.split()[0].replace(",", ""))


def _sections(report: str) -> dict[str, str]:
    parts = re.split(r"^### ", report, flags=re.MULTILINE)[1:]
    return {part.split(":", 1)[0]: part for part in parts}


@pytest.mark.timeout(300)
def test_quick_bench_reports_every_workload(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    report = out.read_text()
    assert "mode: quick" in report
    assert "FAILED" not in report
    sections = _sections(report)
    assert sorted(sections) == sorted(WORKLOADS + SCALE)
    postgres = pg._unavailable() is None
    assert "## Scale: PostgreSQL" in report
    models = (REPO / ".venv-models" / "bin" / "python").exists()
    for key, text in sections.items():
        if key == "W4" and not models:
            assert "The model venv is missing" in text
            continue
        if key in SCALE and not postgres:
            assert "PostgreSQL is not installed" in text, key
            continue
        rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
        figures = [row.split("|")[1:-1] for row in rows[1:]]  # past the header row
        assert figures, f"{key}: no figures"
        for cells in figures:
            values = [_number(cell) for cell in cells[1:4]]  # median, min, max
            assert all(math.isfinite(v) for v in values), (key, cells)
            assert values[1] <= values[0] <= values[2], (key, cells)
    huey = importlib.util.find_spec("huey") is not None
    assert ("huey: enqueue to all results" in sections["W1"]) == huey
    peer = postgres and importlib.util.find_spec("procrastinate") is not None
    assert ("procrastinate: first start to last success" in sections["pg-drain"]) == peer
    bars = report.split("## Pass bars", 1)[1].split("## Ratios", 1)[0]
    marks = [line.rsplit("|", 2)[-2].strip() for line in bars.splitlines() if line[:2] == "| "]
    # The header row, then one pass bar each for W1 drain, W1/huey (with huey), sync, W2,
    # admission x2, latency, memory x2 (queued, large input) and status; on PostgreSQL, the
    # node's drain, W3 at 1, 2 and 3 nodes and (with procrastinate) the node against it;
    # with the model venv, W4; met or not, but always a figure.
    assert len(marks) - 1 == 9 + huey + 4 * postgres + peer + models
    assert set(marks[1:]) <= {"met", "NOT met"}
