"""The `batchd` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from batchd.client import DEFAULT_URL, BatchdError, Client


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.run(args)
        return result
    except BatchdError as exc:
        where = f" (field: {exc.field})" if exc.field else ""
        print(f"error: {exc.message}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="batchd", description=__doc__)
    parser.add_argument(
        "--url",
        default=os.environ.get("BATCHD_URL", DEFAULT_URL),
        help="daemon URL (env BATCHD_URL; default %(default)s)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the daemon")
    serve.add_argument("--config", type=Path, help="config file (TOML)")
    serve.add_argument("--listen", help="HOST:PORT to listen on")
    serve.add_argument("--state-dir", help="where the queue, snapshots and logs live")
    serve.add_argument(
        "--deploy",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="deploy this project folder once the daemon is up (repeatable)",
    )
    serve.set_defaults(run=cmd_serve)

    deploy = commands.add_parser("deploy", help="deploy a Handler project folder")
    deploy.add_argument("project", type=Path, metavar="DIR")
    deploy.set_defaults(run=cmd_deploy)

    submit = commands.add_parser("submit", help="submit a job (JSON body from FILE or stdin)")
    submit.add_argument("api")
    submit.add_argument("file", nargs="?", default="-", metavar="FILE|-")
    submit.add_argument("--dry-run", action="store_true", help="validate only, store nothing")
    submit.set_defaults(run=cmd_submit)

    get = commands.add_parser("get", help="show APIs, an API's jobs, or one job")
    get.add_argument("api", nargs="?")
    get.add_argument("job_id", nargs="?", metavar="JOB_ID")
    get.set_defaults(run=cmd_get)

    stop = commands.add_parser("stop", help="stop a job")
    stop.add_argument("api")
    stop.add_argument("job_id", metavar="JOB_ID")
    stop.set_defaults(run=cmd_stop)
    return parser


def cmd_serve(args: argparse.Namespace) -> int:
    from batchd.config import ConfigError, load_config
    from batchd.daemon import run
    from batchd.logsetup import configure_logging

    try:
        config = load_config(args.config, {"listen": args.listen, "state_dir": args.state_dir})
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_level)
    try:
        return run(config, args.deploy)
    except OSError as exc:
        # The port is taken, the state directory cannot be made, ...: say so, no traceback.
        print(f"error: {exc}", file=sys.stderr)
        return 1


def cmd_deploy(args: argparse.Namespace) -> int:
    from batchd.errors import ApiError

    try:
        api = Client(args.url).deploy(args.project)
    except ApiError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    print(f"deployed {api['name']} version {api['version']} ({api['files']} files)")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    try:
        body = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        print(f"error: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 1
    job = Client(args.url).submit(args.api, body, dry_run=args.dry_run)
    print(json.dumps(job, indent=2))
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    client = Client(args.url)
    if args.api is None:
        rows = [
            [api["name"], str(api["version"]), api["created_at"], api["endpoint"]]
            for api in client.list_apis()
        ]
        print_table(["API", "VERSION", "DEPLOYED", "ENDPOINT"], rows)
    elif args.job_id is None:
        rows = [job_row(job) for job in client.list_jobs(args.api)]
        print_table(["JOB ID", "STATUS", "SUCCEEDED/TOTAL", "FAILED", "START", "DURATION"], rows)
    else:
        print(json.dumps(client.get_job(args.api, args.job_id)["job_status"], indent=2))
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    print(Client(args.url).stop_job(args.api, args.job_id)["message"])
    return 0


def job_row(job: dict[str, Any]) -> list[str]:
    metrics = job["batch_metrics"]
    return [
        job["job_id"],
        job["status"],
        f"{metrics['succeeded']}/{job['total_batch_count']}",
        str(metrics["failed"]),
        job["start_time"] or "",
        duration(job["start_time"], job["end_time"]),
    ]


def duration(start: str | None, end: str | None) -> str:
    from datetime import datetime

    if start is None:
        return ""
    began = datetime.fromisoformat(start).timestamp()
    ended = datetime.fromisoformat(end).timestamp() if end else time.time()
    seconds = int(ended - began)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m{seconds % 60:02d}s"


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
