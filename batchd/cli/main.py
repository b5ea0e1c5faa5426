"""The `batchd` command line: `batchd serve` runs the daemon; every other command talks to
one through :class:`batchd.client.Client`.

`rich` (tables, the progress bar) is imported inside the commands that print with it, so
``import batchd.cli.main`` stays cheap.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchd.client import (
    ACTIVE_STATUSES,
    DEFAULT_URL,
    ENV_TOKEN,
    ENV_URL,
    BatchdError,
    Client,
    JobStatus,
    Record,
)

if TYPE_CHECKING:
    from rich.console import Console

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
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# `batchd get` counts the unfinished jobs among each API's newest this many.
OVERVIEW_JOBS_SCANNED = 1000
DEFAULT_JOBS_SHOWN = 100
DEFAULT_WATCH_INTERVAL = 0.5
# Wide enough that a table written to a pipe or file is never wrapped.
_UNWRAPPED_WIDTH = 10_000


class CliError(Exception):
    """A local problem (an unreadable file, bad arguments): one line, exit code `code`."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.run(args)
        return result
    except BatchdError as exc:
        where = f" (field: {exc.field})" if exc.field else ""
        print(f"error: {exc.message}{where}", file=sys.stderr)
        return EXIT_ERROR
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `batchd results ... | head`: the reader left; say nothing more to it.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR


# --- arguments ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchd", description="Cortex-style Batch API jobs on one machine."
    )
    parser.add_argument(
        "--url",
        default=None,
        help=f"daemon URL (env {ENV_URL}; default {DEFAULT_URL})",
    )
    parser.add_argument("--token", default=None, help=f"bearer token (env {ENV_TOKEN})")
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

    # --url and --token also work after the command name.
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument("--url", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    connection.add_argument("--token", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument(
        "-o",
        "--output",
        choices=("text", "json"),
        default="text",
        help="text for people (default), json for programs",
    )

    def command(
        name: str, run: Callable[[argparse.Namespace], int], summary: str, *parents: Any
    ) -> Any:
        sub = commands.add_parser(name, help=summary, parents=[connection, *parents])
        sub.set_defaults(run=run)
        return sub

    deploy = command("deploy", cmd_deploy, "deploy a Handler project folder")
    deploy.add_argument("project", type=Path, metavar="DIR")
    deploy.add_argument(
        "--no-check",
        dest="check",
        action="store_false",
        help="skip importing the Handler before the version is recorded",
    )

    command("apis", cmd_apis, "list the deployed APIs", output)

    delete = command("delete", cmd_delete, "stop an API's jobs and remove it")
    delete.add_argument("api", metavar="API")

    submit = command(
        "submit", cmd_submit, "submit a job: a JSON body from FILE or stdin, or --items-file"
    )
    submit.add_argument("api", metavar="API")
    submit.add_argument("file", nargs="?", metavar="FILE|-", help="the job as JSON (default -)")
    submit.add_argument(
        "--items-file",
        metavar="FILE.jsonl",
        help="one JSON item per line (- for stdin): submits an item_list",
    )
    submit.add_argument("--batch-size", type=int, metavar="N", help="items per batch")
    submit.add_argument("--workers", type=int, metavar="N", help="worker processes")
    submit.add_argument("--dry-run", action="store_true", help="validate only, store nothing")

    get = command("get", cmd_get, "show every API, an API's jobs, or one job", output)
    get.add_argument("api", nargs="?", metavar="API")
    get.add_argument("job_id", nargs="?", metavar="JOB_ID")
    get.add_argument(
        "--watch",
        action="store_true",
        help="with JOB_ID: show progress until the job ends; the exit code says how "
        "(0 succeeded, 1 completed_with_failures, 2 worker_error/worker_oom, "
        "3 timed_out/stopped, 4 other)",
    )
    get.add_argument(
        "--interval",
        type=float,
        default=DEFAULT_WATCH_INTERVAL,
        metavar="SECONDS",
        help="--watch polls this often (default %(default)s)",
    )
    get.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_JOBS_SHOWN,
        metavar="N",
        help="with API only: show the newest N jobs (default %(default)s)",
    )

    logs = command("logs", cmd_logs, "print a job's log", output)
    logs.add_argument("api", metavar="API")
    logs.add_argument("job_id", metavar="JOB_ID")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until it ends")
    logs.add_argument("--level", help="only records at this level or above (e.g. WARNING)")
    logs.add_argument("--batch", metavar="BATCH_ID", help="only records of this batch")

    command("status", cmd_status, "the daemon: workers, GPUs, disk use", output)

    prune = command("prune", cmd_prune, "prune finished jobs past retention_days", output)
    prune.add_argument("--dry-run", action="store_true", help="only show what would go")

    check = commands.add_parser("check-config", help="validate a daemon config file")
    check.add_argument("config_file", type=Path, metavar="FILE")
    check.set_defaults(run=cmd_check_config)

    for name, run, what in (
        ("stop", cmd_stop, "stop a job"),
        ("retry", cmd_retry, "submit a job's dead-lettered batches again, as a new job"),
        ("results", cmd_results, "print a job's results as JSON lines"),
        ("failed", cmd_failed, "list a job's dead-lettered batches"),
    ):
        parents = (output,) if name in ("results", "failed") else ()
        sub = command(name, run, what, *parents)
        sub.add_argument("api", metavar="API")
        sub.add_argument("job_id", metavar="JOB_ID")
    return parser


def client_of(args: argparse.Namespace) -> Client:
    return Client(url=args.url, token=args.token)


# --- commands -------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from batchd.config import ConfigError, load_config
    from batchd.daemon.logsetup import configure_logging
    from batchd.daemon.run import run

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


def cmd_check_config(args: argparse.Namespace) -> int:
    from batchd.config import ConfigError, load_config
    from batchd.pool import memlimit

    try:
        config = load_config(args.config_file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_ERROR
    print(f"{args.config_file}: ok (listen {config.listen}, state_dir {config.state_dir})")
    # As seen from this process: run it the way the daemon runs (its unit) to see the
    # daemon's view; a login shell's cgroup is not delegated.
    print(f"worker memory limits: {memlimit.choose().describe()}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    status = client_of(args).status()
    if args.output == "json":
        return print_json(status)
    usage = status["disk_usage"]
    print_table(
        None,
        [
            ["version", status["version"]],
            ["state dir", status["state_dir"]],
            [
                "disk use",
                ", ".join(f"{part} {format_bytes(size)}" for part, size in usage.items()),
            ],
            ["GPUs", ",".join(map(str, status["gpus"])) or "none"],
            ["max workers", str(status["max_workers"])],
            ["active jobs", str(len(status["active_jobs"]))],
        ],
    )
    rows = [
        [w["job_id"], str(w["slot"]), str(w["pid"]), w["state"], slots_gpus(w)]
        for w in status["workers"]
    ]
    if rows:
        print()
        print_table(["JOB ID", "SLOT", "PID", "STATE", "GPUS"], rows)
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    report = client_of(args).prune(dry_run=args.dry_run)
    if args.output == "json":
        return print_json(report)
    verb = "would prune" if report["dry_run"] else "pruned"
    print(
        f"{verb} {len(report['jobs'])} finished job(s) older than "
        f"{report['retention_days']:g} days ({format_bytes(report['log_bytes'])} of logs)"
    )
    for job_id in report["jobs"]:
        print(f"  {job_id}")
    return 0


def slots_gpus(worker: dict[str, Any]) -> str:
    return ",".join(map(str, worker.get("gpus") or [])) or "-"


def format_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def cmd_deploy(args: argparse.Namespace) -> int:
    try:
        api = client_of(args).deploy(args.project, check=args.check)
    except OSError as exc:
        raise CliError(f"cannot read {exc.filename or args.project}: {exc.strerror}") from None
    unchanged = " (unchanged: same as the latest version)" if api.get("unchanged") else ""
    print(f"deployed {api['name']} version {api['version']} ({api['files']} files){unchanged}")
    return 0


def cmd_apis(args: argparse.Namespace) -> int:
    from batchd.packing import human_size

    apis = client_of(args).list_apis()
    if args.output == "json":
        return print_json(apis)
    now = time.time()
    rows = [
        [
            api["name"],
            str(api["version"]),
            ago(api["created_at"], now),
            dash(api.get("files")),
            "-" if api.get("size") is None else human_size(api["size"]),
            api["endpoint"],
        ]
        for api in apis
    ]
    print_table(["API", "VERSION", "DEPLOYED", "FILES", "SIZE", "ENDPOINT"], rows)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    answer = client_of(args).delete(args.api)
    stopped = answer.get("stopped_jobs") or []
    jobs = "job" if len(stopped) == 1 else "jobs"
    suffix = f" (stopped {len(stopped)} {jobs}: {', '.join(stopped)})" if stopped else ""
    print(f"{answer['message']}{suffix}")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
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


def cmd_get(args: argparse.Namespace) -> int:
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


def cmd_logs(args: argparse.Namespace) -> int:
    records = client_of(args).stream_job_logs(
        args.api, args.job_id, follow=args.follow, level=args.level, batch_id=args.batch
    )
    render = compact_json if args.output == "json" else log_line
    for record in records:
        print(render(record), flush=args.follow)
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    print(client_of(args).stop_job(args.api, args.job_id)["message"])
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    return print_json(client_of(args).retry(args.api, args.job_id))


def cmd_results(args: argparse.Namespace) -> int:
    for record in client_of(args).results(args.api, args.job_id):
        print(compact_json(record))
    return 0


def cmd_failed(args: argparse.Namespace) -> int:
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


# --- what the commands show -----------------------------------------------------------------


def show_overview(client: Client, output: str) -> int:
    overview = []
    for api in client.list_apis():
        jobs = client.list_jobs(api["name"], limit=OVERVIEW_JOBS_SCANNED)
        latest = jobs[0] if jobs else None
        overview.append(
            {
                "name": api["name"],
                "version": api["version"],
                "running_jobs": sum(job["status"] in ACTIVE_STATUSES for job in jobs),
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


def job_row(job: JobStatus, now: float) -> list[str]:
    metrics = job["batch_metrics"]
    return [
        job["job_id"],
        job["status"],
        f"{metrics['succeeded']}/{job['total_batch_count']}",
        str(metrics["failed"]),
        ago(job["start_time"], now),
        job_duration(job, now),
    ]


def print_job(status: JobStatus) -> None:
    now = time.time()
    metrics = status["batch_metrics"]
    workers = status.get("worker_counts") or {}
    busy = ", ".join(f"{count} {state}" for state, count in workers.items() if count)
    average = metrics.get("average_time_per_batch")
    pairs = [
        ("job id", status["job_id"]),
        ("api", f"{status['api_name']} (version {status['api_version']})"),
        ("status", status["status"]),
        (
            "batches",
            f"{metrics['succeeded']}/{status['total_batch_count']} succeeded, "
            f"{metrics['failed']} failed, {metrics.get('in_progress', 0)} in progress, "
            f"{status.get('batches_in_queue', 0)} queued",
        ),
        ("failed attempts", str(metrics.get("failed_attempts", 0))),
        ("time per batch", "-" if average is None else format_seconds(float(average))),
        ("workers", dash(status.get("workers")) + (f" ({busy})" if busy else "")),
        ("worker slots", slots_text(status.get("worker_details") or [])),
        ("started", f"{status['start_time']} ({ago(status['start_time'], now)})"),
        ("ended", "-" if status["end_time"] is None else f"{status['end_time']}"),
        ("duration", job_duration(status, now)),
        ("timeout", "-" if status.get("timeout") is None else f"{status['timeout']}s"),
        ("max receive count", dash(status.get("max_receive_count"))),
        ("priority", dash(status.get("priority"))),
        ("config", compact_json(status.get("config") or {})),
    ]
    if status.get("retry_of"):
        pairs.append(("retry of", status["retry_of"]))
    if status.get("error"):
        pairs.append(("error", str(status["error"]).rstrip()))
    print_table(None, [list(pair) for pair in pairs])


def slots_text(workers: list[dict[str, Any]]) -> str:
    shown = []
    for worker in workers:
        gpus = ",".join(map(str, worker.get("gpus") or [])) or "none"
        shown.append(f"slot {worker['slot']} pid {worker['pid']} {worker['state']} gpus {gpus}")
    return "; ".join(shown) or "-"


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


def watch_progress(
    client: Client, api: str, job_id: str, interval: float, console: Console
) -> JobStatus:
    """A rich progress bar until the job ends: live on a terminal; elsewhere one line
    each time the status or the count of finished batches changes."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        Task,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:.2f} batches/s" if speed else "- batches/s")

    live = console.is_terminal
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        RateColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(compact=True),
        TextColumn("{task.fields[elapsed]}"),
        console=console,
        disable=not live,
        auto_refresh=live,
    )
    task = progress.add_task(job_id, total=None, failed=0, elapsed="")
    shown: tuple[str, int] | None = None

    def update(status: JobStatus) -> None:
        nonlocal shown
        metrics = status["batch_metrics"]
        done = int(metrics["succeeded"]) + int(metrics["failed"])
        progress.update(
            task,
            description=status["status"],
            total=status["total_batch_count"] or None,
            completed=done,
            failed=metrics["failed"],
            elapsed=job_duration(status, time.time()),
        )
        if not live and shown != (status["status"], done):
            shown = (status["status"], done)
            console.print(progress.make_tasks_table(progress.tasks))

    with progress:
        return client.wait(api, job_id, poll_interval=interval, progress=update)


def log_line(record: Record) -> str:
    labels = record.get("labels") or {}
    parts = [str(record.get("asctime", "")), f"{record.get('levelname', '')!s:<8}"]
    if labels.get("batchID"):
        parts.append(f"[{labels['batchID']}]")
    parts.append(str(record.get("message", "")))
    line = " ".join(parts)
    if record.get("exc_info"):
        line += "\n" + str(record["exc_info"]).rstrip()
    return line


# --- input ----------------------------------------------------------------------------------


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


# --- output ---------------------------------------------------------------------------------


def make_console() -> Console:
    from rich.console import Console

    tty = sys.stdout.isatty()
    return Console(
        markup=False,
        highlight=False,
        emoji=False,
        width=None if tty else _UNWRAPPED_WIDTH,
    )


def print_table(header: list[str] | None, rows: Iterable[list[str]]) -> None:
    """Aligned columns two spaces apart; a header line when `header` is given."""
    from rich.table import Table

    table = Table(box=None, pad_edge=False, show_edge=False, show_header=header is not None)
    for name in header or []:
        table.add_column(name, header_style="bold")
    if header is None:
        table.add_column(style="bold")
        table.add_column()
    for row in rows:
        table.add_row(*row)
    console = make_console()
    with console.capture() as captured:
        console.print(table)
    lines = captured.get().splitlines()
    sys.stdout.write("".join(line.rstrip() + "\n" for line in lines))


def print_json(value: Any) -> int:
    print(json.dumps(value, indent=2, ensure_ascii=False))
    return 0


def compact_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def dash(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def first_line(text: object) -> str:
    lines = str(text or "").strip().splitlines()
    return lines[0] if lines else "-"


def parse_time(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def ago(iso: str | None, now: float) -> str:
    """ "3m ago": how long before `now` an ISO time was."""
    if not iso:
        return "-"
    seconds = max(0, int(now - parse_time(iso)))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def job_duration(job: JobStatus, now: float) -> str:
    if not job.get("start_time"):
        return "-"
    ended = parse_time(job["end_time"]) if job.get("end_time") else now
    return format_seconds(max(0.0, ended - parse_time(job["start_time"])))


def format_seconds(seconds: float) -> str:
    """ "420ms", "4.25s", "12.3s", "4m05s", "2h03m"."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole // 60 % 60:02d}m"
