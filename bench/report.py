"""RESULTS.md: the machine, the commit, every workload's figures and the pass bars."""

from __future__ import annotations

import math
import os
import platform
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from bench.common import REPO, Context, Result, Target

MARK = {True: "met", False: "NOT met", None: "n/a"}


def fmt(value: float, digits: int) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:,.{digits}f}"


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return ""
    return out.stdout.strip()


def commit() -> str:
    sha = _git("rev-parse", "HEAD") or "unknown"
    subject = _git("log", "-1", "--format=%s")
    dirty = _git("status", "--porcelain", "--", "batchd")
    text = f"`{sha[:12]}` ({subject})" if subject else f"`{sha[:12]}`"
    if dirty:
        text += "; batchd/ had uncommitted changes"
    return text


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> str:
    try:
        import psutil

        return f"{psutil.virtual_memory().total / 2**30:.0f} GiB"
    except Exception:
        return "?"


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def batchd_source() -> str:
    """Where the measured batchd comes from: this checkout, unless something shadows it."""
    import batchd

    path = Path(batchd.__file__).resolve().parent
    return "this checkout" if path == REPO / "batchd" else f"{path} (not this checkout!)"


def machine_lines(ctx: Context) -> list[str]:
    from bench import huey_peer

    huey = f"huey {huey_peer.version()}" if ctx.huey else "huey not installed"
    return [
        f"- machine: {os.cpu_count()} cores ({cpu_model()}), {memory_gib()} RAM, "
        f"{platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, {huey}",
        f"- batchd: {batchd_source()}",
    ]


def target_row(target: Target) -> str:
    value = fmt(target.value, target.digits) + (f" {target.unit}" if target.unit else "")
    bar = "-" if target.bound is None else f"{target.op} {fmt(target.bound, target.digits)}"
    return f"| {target.name} | {value} | {bar} | {MARK[target.met]} |"


def render(
    results: list[Result], ctx: Context, started: datetime, seconds: float, load_before: str
) -> str:
    mode = "quick (tiny sizes)" if ctx.quick else "full"
    argv = " ".join(sys.argv[1:])
    lines = [
        "# batchd benchmarks",
        "",
        "Written by `make bench` (`python -m bench`); do not edit by hand. Each figure is the "
        "median of the runs, with the smallest and largest; ratios and pass bars are taken "
        "from the medians. Completions are counted from the stores (batchd's job status, "
        "huey's result store), never from logs. 2 workers everywhere.",
        "",
        f"- date: {started.strftime('%Y-%m-%d %H:%M:%S')} UTC",
        f"- commit: {commit()}",
        *machine_lines(ctx),
        f"- mode: {mode}; {ctx.runs} run(s) per workload; {seconds / 60:.1f} min in all",
        f"- load average (1, 5, 15 min) before: {load_before}; after: {load_average()} "
        "(anything else running on the machine skews the figures)",
        f"- command: `python -m bench{(' ' + argv) if argv else ''}`",
        "",
        "## Pass bars",
        "",
        "| figure | value | bar | |",
        "|---|---|---|---|",
    ]
    for result in results:
        lines.extend(target_row(t) for t in result.targets if t.bound is not None)
    plain = [t for result in results for t in result.targets if t.bound is None]
    if plain:
        lines += ["", "## Ratios without a bar", "", "| figure | value | | |", "|---|---|---|---|"]
        lines.extend(target_row(t) for t in plain)
    section = ""
    for result in results:
        if result.section != section:
            section = result.section
            lines += ["", f"## {section}", ""]
        lines += [f"### {result.key}: {result.title}", "", result.what, ""]
        if result.error:
            lines += [f"**FAILED**: {result.error}", ""]
        if result.metrics:
            lines += ["| figure | median | min | max | unit |", "|---|---|---|---|---|"]
            for metric in result.metrics.values():
                cells = (fmt(v, metric.digits) for v in (metric.median, metric.low, metric.high))
                lines.append(f"| {metric.name} | {' | '.join(cells)} | {metric.unit} |")
            lines.append("")
        for note in result.notes:
            lines.append(f"- {note}")
        lines += [
            f"- {len(next(iter(result.metrics.values())).values) if result.metrics else 0} "
            f"run(s), {result.seconds:.0f} s",
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


def now() -> datetime:
    return datetime.now(UTC)
