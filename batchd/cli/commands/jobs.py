"""Jobs: ``submit`` one, ``get`` (every API, an API's jobs, one job, or ``--watch`` it),
``logs``, ``stop``, ``retry``, ``results`` and ``failed``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from batchd.cli.commands import client_of
from batchd.cli.exits import EXIT_USAGE, CliError
from batchd.cli.render import (
    compact_json,
    dash,
    first_line,
    job_duration,
    job_row,
    log_line,
    make_console,
    print_job,
    print_json,
    print_table,
    watch_progress,
)
from batchd.client import TERMINAL_STATUSES, Client

# `batchd get API JOB_ID --watch` exits with the code that says how the job ended.
WATCH_EXIT_CODES = {
    "succeeded": 0,
    "completed_with_failures": 1,
    "worker_error": 2,
    "worker_oom": 2,
    "timed_out": 3,
    "stopped": 3,
}
WATCH_EXIT_OTHER = 4

# `batchd get` counts the unfinished jobs among each API's newest this many.
OVERVIEW_JOBS_SCANNED = 1000


def submit(args: argparse.Namespace) -> int:
    if args.items_file is not None:
        if args.file is not None:
            raise CliError("give either FILE or --items-file, not both", EXIT_USAGE)
        if args.batch_size is None:
            raise CliError("--items-file needs --batch-size", EXIT_USAGE)
        job: dict[str, Any] = {
            "item_list": {"items": read_items(args.items_file), "batch_size": args.batch_size}
        }
        if args.workers is not None:
            job["workers"] = args.workers
        body = json.dumps(job).encode()
    else:
        if args.batch_size is not None or args.workers is not None:
            raise CliError("--batch-size and --workers go with --items-file", EXIT_USAGE)
        body = read_input(args.file or "-")
    print_json(client_of(args).submit(args.api, body, dry_run=args.dry_run))
    return 0


def get(args: argparse.Namespace) -> int:
    client = client_of(args)
    if args.watch and args.job_id is None:
        raise CliError("--watch needs API and JOB_ID", EXIT_USAGE)
    if args.api is None:
        return show_overview(client, args.output)
    if args.job_id is None:
        jobs = client.list_jobs(args.api, limit=args.limit)
        if args.output == "json":
            return print_json(jobs)
        now = time.time()
        header = ["JOB ID", "STATUS", "PROGRESS", "FAILED", "STARTED", "DURATION"]
        print_table(header, [job_row(job, now) for job in jobs])
        return 0
    if args.watch:
        return watch(client, args.api, args.job_id, args.interval, args.output)
    status = client.get_job(args.api, args.job_id)["job_status"]
    if args.output == "json":
        return print_json(status)
    print_job(status)
    return 0


def logs(args: argparse.Namespace) -> int:
    records = client_of(args).stream_job_logs(
        args.api, args.job_id, follow=args.follow, level=args.level, batch_id=args.batch
    )
    render = compact_json if args.output == "json" else log_line
    for record in records:
        print(render(record), flush=args.follow)
    return 0


def stop(args: argparse.Namespace) -> int:
    print(client_of(args).stop_job(args.api, args.job_id)["message"])
    return 0


def retry(args: argparse.Namespace) -> int:
    return print_json(client_of(args).retry(args.api, args.job_id))


def results(args: argparse.Namespace) -> int:
    for record in client_of(args).results(args.api, args.job_id):
        print(compact_json(record))
    return 0


def failed(args: argparse.Namespace) -> int:
    dead = client_of(args).failed(args.api, args.job_id)
    if args.output == "json":
        for record in dead:
            print(compact_json(record))
        return 0
    rows = [
        [record["batch_id"], str(record["attempts"]), first_line(record.get("error"))]
        for record in dead
    ]
    print_table(["BATCH ID", "ATTEMPTS", "ERROR"], rows)
    return 0


def show_overview(client: Client, output: str) -> int:
    overview = []
    for api in client.list_apis():
        jobs = client.list_jobs(api["name"], limit=OVERVIEW_JOBS_SCANNED)
        latest = jobs[0] if jobs else None
        overview.append(
            {
                "name": api["name"],
                "version": api["version"],
                "running_jobs": sum(job["status"] not in TERMINAL_STATUSES for job in jobs),
                "latest_job": None
                if latest is None
                else {"job_id": latest["job_id"], "status": latest["status"]},
            }
        )
    if output == "json":
        return print_json(overview)
    rows = [
        [
            api["name"],
            str(api["version"]),
            str(api["running_jobs"]),
            dash(api["latest_job"] and api["latest_job"]["job_id"]),
            dash(api["latest_job"] and api["latest_job"]["status"]),
        ]
        for api in overview
    ]
    print_table(["API", "VERSION", "RUNNING", "LATEST JOB", "STATUS"], rows)
    return 0


def watch(client: Client, api: str, job_id: str, interval: float, output: str) -> int:
    if output == "json":
        final = client.wait(api, job_id, poll_interval=interval)
        print_json(final)
        return WATCH_EXIT_CODES.get(final["status"], WATCH_EXIT_OTHER)
    console = make_console()
    final = watch_progress(client, api, job_id, interval, console)
    metrics = final["batch_metrics"]
    print(
        f"job {job_id} {final['status']}: {metrics['succeeded']}/{final['total_batch_count']} "
        f"batches succeeded, {metrics['failed']} failed, took {job_duration(final, time.time())}"
    )
    if final.get("error"):
        print(f"error: {str(final['error']).rstrip()}")
    return WATCH_EXIT_CODES.get(final["status"], WATCH_EXIT_OTHER)


def read_input(name: str) -> bytes:
    try:
        return sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {name}: {exc.strerror}") from None


def read_items(name: str) -> list[Any]:
    """Items from JSON lines; blank lines are skipped."""
    text = read_input(name).decode("utf-8", errors="replace")
    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                items.append(json.loads(line))
            except ValueError as exc:
                raise CliError(f"{name} line {number} is not JSON: {exc}") from None
    return items
