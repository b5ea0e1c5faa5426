"""Jobs: ``submit`` one, ``get`` (every API, an API's jobs, one job, or ``--watch`` it),
``logs``, ``stop``, ``retry``, ``results`` and ``failed``."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from batchd.cli.commands import client_of
from batchd.cli.exits import EXIT_USAGE, CliError
from batchd.cli.render import (
    ReconnectNotice,
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
from batchd.client import TERMINAL_STATUSES, Client, JobStatus, Record
from batchd.statuses import JobStatus as Status

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

# `batchd get` counts at most this many unfinished jobs of each API (GET /jobs's page).
OVERVIEW_JOBS_COUNTED = 1000
# `get API --status`: GET /jobs gives at most this many a page.
FILTER_PAGE = 1000
# Names `get --status` takes for several statuses at once.
STATUS_GROUPS = {
    # Unfinished: `paused` too.
    "active": frozenset(Status) - TERMINAL_STATUSES,
    "failed": frozenset(
        {
            Status.COMPLETED_WITH_FAILURES,
            Status.WORKER_ERROR,
            Status.WORKER_OOM,
            Status.TIMED_OUT,
            Status.ENQUEUE_FAILED,
            Status.UNEXPECTED_ERROR,
        }
    ),
}
# A file of items, one JSON value a line (submit tells them from a job body by this too).
JSON_LINES_SUFFIXES = (".jsonl", ".ndjson")
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def submit(args: argparse.Namespace) -> int:
    if args.wait and args.dry_run:
        raise CliError("--dry-run stores no job to --wait for", EXIT_USAGE)
    if args.items_file is not None:
        if args.file is not None:
            raise CliError("give either FILE or --items-file, not both", EXIT_USAGE)
        if args.batch_size is None:
            raise CliError("--items-file needs --batch-size", EXIT_USAGE)
    name = args.items_file or args.file or "-"
    raw = read_input(name)
    if args.items_file is not None or is_json_lines(name, raw):
        if args.batch_size is None:
            raise CliError(f"{name} holds items (JSON lines): give --batch-size", EXIT_USAGE)
        job: dict[str, Any] = {
            "item_list": {"items": parse_items(name, raw), "batch_size": args.batch_size}
        }
        if args.workers is not None:
            job["workers"] = args.workers
        body = json.dumps(job).encode()
    else:
        if args.batch_size is not None or args.workers is not None:
            raise CliError("--batch-size and --workers go with --items-file", EXIT_USAGE)
        body = raw
    client = client_of(args)
    spec = client.submit(args.api, body, dry_run=args.dry_run)
    if args.print_job_id:
        # A dry run stores no job: -q leaves only its exit code to say it would pass.
        if not args.dry_run:
            print(spec["job_id"], flush=True)
    elif not args.wait:
        print_json(spec)
    else:
        print(f"submitted job {spec['job_id']}", flush=True)
    if not args.wait:
        return 0
    output = "quiet" if args.print_job_id else "text"
    return watch(client, args.api, spec["job_id"], args.interval, output)


def get(args: argparse.Namespace) -> int:
    client = client_of(args)
    if args.watch and args.job_id is None:
        raise CliError("--watch needs API and JOB_ID", EXIT_USAGE)
    if args.status is not None and (args.api is None or args.job_id is not None):
        raise CliError("--status goes with API alone (it filters the API's jobs)", EXIT_USAGE)
    if args.api is None:
        return show_overview(client, args.output)
    if args.job_id is None:
        jobs = list_jobs(client, args.api, args.limit, args.status)
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
    if args.tail is not None and args.tail < 1:
        raise CliError("--tail must be 1 or more", EXIT_USAGE)
    render = compact_json if args.output == "json" else log_line
    with ReconnectNotice() as notice:
        records = client_of(args).stream_job_logs(
            args.api,
            args.job_id,
            follow=args.follow,
            level=args.level,
            batch_id=args.batch,
            tail=args.tail,
            on_reconnect=notice,
        )
        for record in since(records, args.since):
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


def list_jobs(
    client: Client, api: str, limit: int, statuses: frozenset[str] | None
) -> list[JobStatus]:
    """The API's newest `limit` jobs, of `statuses` only when given (the daemon filters
    them, a page at a time until `limit` are found or the jobs run out)."""
    if statuses is None:
        return client.list_jobs(api, limit=limit)
    found: list[JobStatus] = []
    before = None
    while len(found) < limit:
        asked = min(FILTER_PAGE, limit - len(found))
        page = client.list_all_jobs(api, statuses, limit=asked, before=before)
        found += page
        if len(page) < asked:
            break
        before = page[-1]["job_id"]
    return found


def status_names(text: str) -> frozenset[str]:
    """`--status running,failed`: the statuses named, a group (`active`, `failed`) standing
    for its members; an unknown name is a usage error that names it."""
    known = {status.value for status in Status}
    chosen: set[str] = set()
    for name in (part.strip().lower() for part in text.split(",")):
        if name in STATUS_GROUPS:
            chosen |= STATUS_GROUPS[name]
        elif name in known:
            chosen.add(name)
        else:
            names = ", ".join([*STATUS_GROUPS, *sorted(known)])
            raise argparse.ArgumentTypeError(f"unknown status {name!r} (one of: {names})")
    return frozenset(chosen)


def since_time(text: str) -> float:
    """`--since`: a duration ago (`90s`, `10m`, `1h30m`, `2d`) or an ISO time (local time
    unless it names its zone), as a Unix time."""
    if re.fullmatch(rf"(?:{DURATION.pattern})+", text):
        ago = sum(float(n) * DURATION_UNITS[unit] for n, unit in DURATION.findall(text))
        return time.time() - ago
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration (90s, 10m, 2h, 1d) nor an ISO time"
        ) from None


def since(records: Iterator[Record], start: float | None) -> Iterator[Record]:
    """The records written at `start` or later (by their asctime, the daemon's local time);
    a record without a readable time is kept."""
    for record in records:
        if start is None or record_time(record) >= start:
            yield record


def record_time(record: Record) -> float:
    try:
        return datetime.strptime(str(record["asctime"]), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    except (KeyError, ValueError):
        return float("inf")


def show_overview(client: Client, output: str) -> int:
    overview = []
    for api in client.list_apis():
        newest = client.list_jobs(api["name"], limit=1)
        latest = newest[0] if newest else None
        # The daemon picks the unfinished ones: no reading of finished jobs to count them.
        unfinished = client.list_all_jobs(
            api["name"], STATUS_GROUPS["active"], limit=OVERVIEW_JOBS_COUNTED
        )
        overview.append(
            {
                "name": api["name"],
                "version": api["version"],
                "running_jobs": len(unfinished),
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
    """Wait for the job to end, showing progress (text), the final status (json) or
    nothing (quiet); the exit code says how it ended."""
    if output in ("json", "quiet"):
        with ReconnectNotice() as notice:
            final = client.wait(api, job_id, poll_interval=interval, on_reconnect=notice)
        if output == "json":
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


def is_json_lines(name: str, raw: bytes) -> bool:
    """Whether a submitted file holds items, one JSON value a line, not a job: by its
    name (.jsonl, .ndjson), else because it is not one JSON value but its first line is."""
    if name.lower().endswith(JSON_LINES_SUFFIXES):
        return True
    try:
        json.loads(raw)
        return False
    except ValueError:
        pass
    lines = [line for line in raw.splitlines() if line.strip()]
    try:
        json.loads(lines[0])
    except (IndexError, ValueError):
        return False
    return len(lines) > 1


def parse_items(name: str, raw: bytes) -> list[Any]:
    """Items from JSON lines; blank lines are skipped."""
    text = raw.decode("utf-8", errors="replace")
    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                items.append(json.loads(line))
            except ValueError as exc:
                raise CliError(f"{name} line {number} is not JSON: {exc}") from None
    return items
