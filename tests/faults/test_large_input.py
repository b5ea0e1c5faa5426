"""Scenario 12d: a delimited_files input of 1 GB, admitted in bounded memory."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.faults.conftest import StartScenario, size

MIB = 1024 * 1024
LINE_BYTES = 1024
BATCH_SIZE = 100
# The workers wait in __init__ for the gate file: nothing is leased while the clock runs.
GATE_HANDLER = """
import os, time

class Handler:
    def __init__(self, config):
        while not os.path.exists(config["gate"]):
            time.sleep(0.05)

    def handle_batch(self, payload):
        return None
"""


def vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def write_input(path: Path, lines: int) -> int:
    """`lines` JSON objects of about LINE_BYTES each; the file's size."""
    pad = "x" * (LINE_BYTES - len('{"i":0000000,"pad":""}\n'))
    with path.open("w") as out:
        for start in range(0, lines, 10_000):
            out.write(
                "".join(
                    f'{{"i":{index},"pad":"{pad}"}}\n'
                    for index in range(start, min(lines, start + 10_000))
                )
            )
    return path.stat().st_size


def test_large_delimited_input_in_bounded_memory(
    scenario: StartScenario,
    make_project: Callable[..., Path],
    inputs_dir: Path,
    tmp_path: Path,
    figures: dict[str, Any],
) -> None:
    """12d. A delimited_files input of 1 GB (short: 48 MB) in one job
    admitted (2xx, every batch queued), with the daemon's peak RSS growing by at most
    256 MiB (short: 64 MiB, well under what holding the input would take) over its peak
    before the POST.
    """
    lines = size(48 * 1024, 1024 * 1024)
    growth_limit_mib = size(64, 256)
    run = scenario("gate", project=make_project("gate", GATE_HANDLER), max_workers=2)
    daemon, client = run.daemon, run.client
    assert daemon.process is not None
    gate = tmp_path / "gate"
    input_bytes = write_input(inputs_dir / "big.jsonl", lines)
    (inputs_dir / "small.jsonl").write_text("1\n")
    job: dict[str, Any] = {
        "workers": 2,
        "config": {"gate": str(gate)},
        "delimited_files": {"paths": [str(inputs_dir / "small.jsonl")], "batch_size": 1},
    }
    # A small job first: whatever the first admission allocates once is in the baseline.
    run.stop(run.submit(job))
    before_kib = vm_kib(daemon.process.pid, "VmHWM")

    job["delimited_files"] = {"paths": [str(inputs_dir / "big.jsonl")], "batch_size": BATCH_SIZE}
    posted = time.monotonic()
    spec = client.submit("gate", job)
    admission_s = time.monotonic() - posted
    after_kib = vm_kib(daemon.process.pid, "VmHWM")
    status = run.status(spec["job_id"])
    run.stop(spec["job_id"])
    gate.touch()

    growth_mib = (after_kib - before_kib) / 1024
    expected = -(-lines // BATCH_SIZE)
    figures.update(
        input_mib=round(input_bytes / MIB),
        batches=expected,
        admission_s=round(admission_s, 1),
        peak_rss_before_mib=round(before_kib / 1024),
        peak_rss_after_mib=round(after_kib / 1024),
        rss_growth_mib=round(growth_mib),
    )
    assert spec["total_batch_count"] == expected
    assert status["batches_in_queue"] == expected
    assert growth_mib <= growth_limit_mib, figures
