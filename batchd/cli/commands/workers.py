"""``batchd workers``: the live workers with their memory and CPU use, and the last worker
exits with their cause (GET /workers)."""

from __future__ import annotations

import argparse
import time
from typing import Any

from batchd.cli.commands import client_of
from batchd.cli.render import ago, dash, print_json, print_table, size_text, slots_gpus

DEFAULT_EVENTS_SHOWN = 20


def workers(args: argparse.Namespace) -> int:
    report = client_of(args).workers()
    if args.api is not None:
        report = {
            part: [row for row in report[part] if row["api_name"] == args.api]
            for part in ("workers", "events")
        }
    report["events"] = report["events"][: args.events]
    if args.output == "json":
        return print_json(report)
    now = time.time()
    print_table(
        [
            "API",
            "JOB ID",
            "SLOT",
            "PID",
            "STATE",
            "GPUS",
            "BATCH",
            "STARTED",
            "RSS",
            "CPU",
            "GPU MEM",
        ],
        [_worker_row(worker, now) for worker in report["workers"]],
    )
    if not report["workers"]:
        print("no live workers")
    print()
    print_table(
        ["WHEN", "API", "JOB ID", "SLOT", "PID", "CAUSE", "EXIT", "RESTART IN", "REASON"],
        [_event_row(event, now) for event in report["events"]],
    )
    if not report["events"]:
        print("no worker exits yet (kept in memory: since the daemon started)")
    return 0


def _worker_row(worker: dict[str, Any], now: float) -> list[str]:
    cpu, gpu_memory = worker["cpu_percent"], worker["gpu_memory_bytes"]
    rss = worker["rss_bytes"]
    return [
        worker["api_name"],
        worker["job_id"],
        str(worker["slot"]),
        str(worker["pid"]),
        worker["state"],
        slots_gpus(worker),
        dash(worker["batch_id"]),
        ago(worker["started_at"], now),
        "-" if rss is None else size_text(rss),
        "-" if cpu is None else f"{cpu:.0f}%",
        "-" if gpu_memory is None else size_text(gpu_memory),
    ]


def _event_row(event: dict[str, Any], now: float) -> list[str]:
    restart_in = event["restart_in"]
    return [
        ago(event["time"], now),
        event["api_name"],
        event["job_id"],
        str(event["slot"]),
        str(event["pid"]),
        event["cause"],
        event["signal"] or str(event["exit_code"]),
        "-" if restart_in is None else f"{restart_in:.1f}s",
        event["reason"],
    ]
