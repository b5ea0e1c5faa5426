"""Memory: the daemon's RSS with 10,000 and with 1,000,000 batches queued, and what
admitting a 1 GiB delimited_files input adds to its peak.

A fresh daemon per size; the job's workers block in __init__ until a file appears (the
gate handler), so every batch stays queued while the job is running. RSS is read with
psutil a second after the 2xx; the peak during the admission is sampled every 50 ms.
The input's figure is the kernel's own peak (VmHWM) after the 2xx less its peak before
the POST (after a one-line job, so that one-off allocations are in the baseline).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import psutil

from bench.common import Context, Daemon, Result, Target, job_body, progress, ratio

KEY = "memory"
TITLE = "Daemon memory with batches queued"
MIB = 1024 * 1024
SETTLE_S = 1.0
INPUT_LINE_BYTES = 1024
INPUT_BATCH_SIZE = 100
# docs/submitting.md (delimited_files): a large input is streamed, never held in memory.
INPUT_GROWTH_BOUND_MIB = 256


def queued_rss(ctx: Context, batches: int) -> tuple[float, float]:
    """(RSS with `batches` queued, peak RSS during their admission), in MiB."""
    with Daemon(ctx.workdir, f"memory{batches}") as daemon:
        gate = daemon.root / "gate"
        api = daemon.deploy("gate")
        body = job_body(list(range(batches)), 1, config={"gate": str(gate)})
        proc = daemon.ps()
        peak = [float(proc.memory_info().rss)]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                try:
                    peak.append(float(proc.memory_info().rss))
                except psutil.Error:
                    return
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        job_id = str(daemon.submit(api, body)["job_id"])
        time.sleep(SETTLE_S)
        status = daemon.status(api, job_id)
        rss = float(proc.memory_info().rss)
        done.set()
        sampler.join()
        if status["batches_in_queue"] != batches:
            raise RuntimeError(
                f"{status['batches_in_queue']} batches queued, not {batches} ({status['status']})"
            )
        daemon.client.stop_job(api, job_id)
        gate.touch()
    return rss / MIB, max(peak) / MIB


def write_input(path: Path, lines: int) -> int:
    """`lines` JSON objects of about INPUT_LINE_BYTES each; the file's size in bytes."""
    pad = "x" * (INPUT_LINE_BYTES - len('{"i":0000000,"pad":""}\n'))
    step = 10_000
    with path.open("w") as out:
        for start in range(0, lines, step):
            end = min(lines, start + step)
            out.write("".join(f'{{"i":{i},"pad":"{pad}"}}\n' for i in range(start, end)))
    return path.stat().st_size


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def input_growth(ctx: Context, inputs: Path, lines: int) -> tuple[float, float]:
    """(growth of the daemon's peak RSS in MiB, seconds to the 2xx) for a job of the
    input in `inputs`/big.jsonl, batch_size INPUT_BATCH_SIZE."""
    with Daemon(ctx.workdir, "memory-input", input_roots=[str(inputs)]) as daemon:
        gate = daemon.root / "gate"
        api = daemon.deploy("gate")

        def body(name: str, batch_size: int) -> bytes:
            source = {"paths": [str(inputs / name)], "batch_size": batch_size}
            job = {"workers": 2, "config": {"gate": str(gate)}, "delimited_files": source}
            return json.dumps(job).encode()

        daemon.client.stop_job(api, str(daemon.submit(api, body("small.jsonl", 1))["job_id"]))
        before = peak_rss_kib(daemon.pid)
        start = time.perf_counter()
        spec = daemon.submit(api, body("big.jsonl", INPUT_BATCH_SIZE))
        seconds = time.perf_counter() - start
        after = peak_rss_kib(daemon.pid)
        expected = -(-lines // INPUT_BATCH_SIZE)
        if int(spec["total_batch_count"]) != expected:
            raise RuntimeError(f"admitted {spec['total_batch_count']} batches, not {expected}")
        daemon.client.stop_job(api, str(spec["job_id"]))
        gate.touch()
    return (after - before) / 1024, seconds


def run(ctx: Context) -> Result:
    small, large = ctx.sizes.memory_small, ctx.sizes.memory_large
    result = Result(
        KEY,
        TITLE,
        f"daemon RSS (psutil) {SETTLE_S:g} s after the 2xx of a job of {small:,}, then of "
        f"{large:,} one-item batches, each on a fresh daemon, the workers held in __init__ "
        "so that every batch stays queued; and the growth of its peak RSS (VmHWM) while "
        f"admitting a delimited_files input of {ctx.sizes.memory_input_lines:,} lines of "
        f"1 KiB, batch_size {INPUT_BATCH_SIZE}.",
    )
    lines = ctx.sizes.memory_input_lines
    inputs = ctx.workdir / "memory-inputs"
    inputs.mkdir(exist_ok=True)
    input_mib = write_input(inputs / "big.jsonl", lines) / MIB
    (inputs / "small.jsonl").write_text("1\n")
    grown = f"peak RSS growth admitting a {input_mib:,.0f} MiB delimited_files input"
    for attempt in range(1, ctx.runs + 1):
        rss_small, peak_small = queued_rss(ctx, small)
        rss_large, peak_large = queued_rss(ctx, large)
        progress(
            f"memory run {attempt}/{ctx.runs}: RSS {rss_small:.0f} MiB with {small:,} queued, "
            f"{rss_large:.0f} MiB with {large:,} (peak {peak_large:.0f} MiB)"
        )
        result.add(f"RSS, {small:,} queued", "MiB", rss_small, 1)
        result.add(f"RSS, {large:,} queued", "MiB", rss_large, 1)
        result.add(f"peak RSS while admitting {small:,}", "MiB", peak_small, 1)
        result.add(f"peak RSS while admitting {large:,}", "MiB", peak_large, 1)
        growth, seconds = input_growth(ctx, inputs, lines)
        progress(
            f"memory run {attempt}/{ctx.runs}: a {input_mib:,.0f} MiB delimited_files input "
            f"admitted in {seconds:.1f} s, peak RSS +{growth:.0f} MiB"
        )
        result.add(grown, "MiB", growth, 1)
        result.add(f"{input_mib:,.0f} MiB delimited_files input: POST to 2xx", "s", seconds, 1)
    result.targets.append(
        Target(
            f"RSS({large:,}) / RSS({small:,})",
            ratio(result.median(f"RSS, {large:,} queued"), result.median(f"RSS, {small:,} queued")),
            "<=",
            1.5,
            "x",
            2,
        )
    )
    result.targets.append(
        Target(grown, result.median(grown), "<=", INPUT_GROWTH_BOUND_MIB, "MiB", 0)
    )
    return result
