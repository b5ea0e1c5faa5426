"""The argument parser: every command, its flags and its help, and which function runs it."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batchd.cli.commands import apis, daemon, jobs, migrate, pause, workers
from batchd.cli.exits import CliError
from batchd.client import DEFAULT_URL
from batchd.constants import ENV_TOKEN, ENV_URL, VERSION
from batchd.reconnect import DEFAULT_RECONNECT_TIMEOUT, ENV_RECONNECT_TIMEOUT

DEFAULT_JOBS_SHOWN = 100
DEFAULT_WATCH_INTERVAL = 0.5

# How the completion script completes an argument (shtab's `.complete`, by shell): API names
# from `batchd apis` (the daemon of $BATCHD_URL), folders, files.
_API_NAMES_COMMAND = "batchd apis 2>/dev/null | awk 'NR > 1 {print $1}'"
API_NAMES = {"bash": "_batchd_api_names", "zsh": f'(${{(f)"$({_API_NAMES_COMMAND})"}})'}
BASH_PREAMBLE = f"""
_batchd_api_names() {{
  compgen -W "$({_API_NAMES_COMMAND})" -- "$1"
}}
"""
FOLDERS = {"bash": "_shtab_compgen_dirs", "zsh": "_files -/"}
FILES = {"bash": "_shtab_compgen_files", "zsh": "_files"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchd",
        description="Cortex-style Batch API jobs on one machine.",
        epilog="exit codes: 0 ok, 1 error, 2 usage, 69 daemon unreachable or lost, "
        "130 interrupted; --watch/--wait: how the job ended (see `batchd get --help`)",
    )
    parser.add_argument("--version", action="version", version=f"batchd {VERSION}")
    parser.add_argument(
        "--url",
        default=None,
        help=f"daemon URL (env {ENV_URL}; default {DEFAULT_URL})",
    )
    parser.add_argument("--token", default=None, help=f"bearer token (env {ENV_TOKEN})")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

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
    serve.add_argument(
        "--log-format",
        choices=("auto", "human", "json"),
        help="human lines, or JSON lines (journald); default auto: human on a terminal",
    )
    serve.set_defaults(run=daemon.serve)

    # --url and --token also work after the command name.
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument("--url", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    connection.add_argument("--token", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument(
        "--reconnect-timeout",
        type=float,
        metavar="SECONDS",
        help="while waiting, ride out a daemon restart or a 503 this long before giving up "
        f"with exit 69 (env {ENV_RECONNECT_TIMEOUT}; default {DEFAULT_RECONNECT_TIMEOUT:g})",
    )
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

    deploy = command("deploy", apis.deploy, "deploy a Handler project folder")
    completes(deploy.add_argument("project", type=Path, metavar="DIR"), FOLDERS)
    deploy.add_argument(
        "--config",
        metavar="FILE",
        help="the config file in DIR (default: batchd.toml, else cortex.yaml or cortex.yml)",
    )
    deploy.add_argument(
        "--name", metavar="API", help="deploy only this API of a config that defines several"
    )
    deploy.add_argument(
        "--no-check",
        dest="check",
        action="store_false",
        help="skip importing the Handler before the version is recorded",
    )

    command("apis", apis.list_apis, "list the deployed APIs", output)

    delete = command("delete", apis.delete, "stop an API's jobs and remove it")
    api_argument(delete)
    for name, run, what in (
        ("pause-api", pause.pause_api, "pause an API's jobs, and the ones submitted to it"),
        ("resume-api", pause.resume_api, "resume a paused API's jobs"),
    ):
        api_argument(command(name, run, what))

    submit = command(
        "submit",
        jobs.submit,
        "submit a job: a JSON body from FILE or stdin, or JSON lines of items",
        waiting,
    )
    api_argument(submit)
    file = submit.add_argument(
        "file",
        nargs="?",
        metavar="FILE|-",
        help="the job as JSON (default -); a FILE.jsonl (or lines that are each a JSON "
        "value) is items, as --items-file",
    )
    completes(file, FILES)
    submit.add_argument(
        "--items-file",
        metavar="FILE.jsonl",
        help="one JSON item per line (- for stdin): submits an item_list",
    )
    submit.add_argument("--batch-size", type=int, metavar="N", help="items per batch")
    submit.add_argument("--workers", type=int, metavar="N", help="worker processes")
    submit.add_argument("--dry-run", action="store_true", help="validate only, store nothing")
    submit.add_argument(
        "-q", "--print-job-id", action="store_true", help="print only the new job's id"
    )
    submit.add_argument(
        "-w",
        "--wait",
        "--watch",
        dest="wait",
        action="store_true",
        help="then show progress until the job ends; exit code as get --watch",
    )
    add_interval(submit)

    get = command("get", jobs.get, "show every API, an API's jobs, or one job", output, waiting)
    api_argument(get, nargs="?")
    get.add_argument("job_id", nargs="?", metavar="JOB_ID")
    get.add_argument(
        "-w",
        "--watch",
        action="store_true",
        help="with JOB_ID: show progress until the job ends; the exit code says how "
        "(0 succeeded, 1 completed_with_failures, 2 worker_error/worker_oom, "
        "3 timed_out/stopped, 4 other, 69 lost the daemon)",
    )
    add_interval(get)
    get.add_argument(
        "--status",
        type=jobs.status_names,
        metavar="STATUS[,STATUS]",
        help="with API only: only jobs in these statuses; `active` and `failed` name groups",
    )
    get.add_argument(
        "--limit",
        type=positive(int),
        default=DEFAULT_JOBS_SHOWN,
        metavar="N",
        help="with API only: show the newest N jobs (default %(default)s)",
    )

    logs = command("logs", jobs.logs, "print a job's log", output, waiting)
    api_argument(logs)
    logs.add_argument("job_id", metavar="JOB_ID")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until it ends")
    logs.add_argument("--level", help="only records at this level or above (e.g. WARNING)")
    logs.add_argument("--batch", metavar="BATCH_ID", help="only records of this batch")
    logs.add_argument(
        "--tail", type=int, metavar="N", help="only the last N lines (then the filters apply)"
    )
    logs.add_argument(
        "--since",
        type=jobs.since_time,
        metavar="WHEN",
        help="only records from then on: a duration ago (90s, 10m, 2h, 1d) or an ISO time",
    )

    command("status", daemon.status, "the daemon: workers, GPUs, disk use", output)
    live = command("workers", workers.workers, "workers' memory and CPU, and recent exits", output)
    live.add_argument("--api", metavar="API", help="only this API's workers and exits")
    live.add_argument(
        "--events",
        type=positive(int),
        default=workers.DEFAULT_EVENTS_SHOWN,
        metavar="N",
        help="show the last N exits (default %(default)s; the daemon keeps 500)",
    )

    prune = command("prune", daemon.prune, "prune finished jobs past retention_days", output)
    prune.add_argument("--dry-run", action="store_true", help="only show what would go")

    check = commands.add_parser("check-config", help="validate a daemon config file")
    check.add_argument("config_file", type=Path, metavar="FILE")
    check.set_defaults(run=daemon.check_config)

    move = commands.add_parser(
        "migrate",
        help="move a stopped SQLite daemon's APIs and unfinished jobs to PostgreSQL",
        parents=[output],
    )
    move.add_argument("--state-dir", required=True, help="the SQLite daemon's state dir")
    target = move.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", metavar="URL", help="postgresql://user@host:5432/db")
    target.add_argument(
        "--to-file", metavar="FILE", help="a file holding the URL (no password in ps)"
    )
    move.set_defaults(run=migrate.migrate)

    completion = commands.add_parser(
        "completion", help="print the shell completion script (bash or zsh)"
    )
    completion.add_argument("shell", choices=("bash", "zsh"))
    completion.set_defaults(run=lambda args: print_completion(parser, args.shell))

    for name, run, what in (
        ("stop", jobs.stop, "stop a job"),
        ("pause", pause.pause, "pause a job: its leased batches finish, nothing more starts"),
        ("resume", pause.resume, "resume a paused job"),
        ("retry", jobs.retry, "submit a job's dead-lettered batches again, as a new job"),
        ("results", jobs.results, "print a job's results as JSON lines"),
        ("failed", jobs.failed, "list a job's dead-lettered batches"),
    ):
        parents = (output,) if name in ("results", "failed") else ()
        sub = command(name, run, what, *parents)
        api_argument(sub)
        sub.add_argument("job_id", metavar="JOB_ID")
    return parser


def add_interval(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--interval",
        type=positive(float),
        default=DEFAULT_WATCH_INTERVAL,
        metavar="SECONDS",
        help="the watch polls this often (default %(default)s)",
    )


def positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type: a `kind` number above 0 (a 0 or negative --interval would poll
    without pause or crash, a --limit or --events of 0 would show nothing)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"must be a number above 0, not {text}")
        return value

    return parse


def print_completion(parser: argparse.ArgumentParser, shell: str) -> int:
    """The completion script of `parser` for `shell`, made by shtab (imported only here)."""
    try:
        shtab = importlib.import_module("shtab")
    except ModuleNotFoundError:
        raise CliError("shell completion needs shtab: pip install shtab") from None
    preamble = BASH_PREAMBLE if shell == "bash" else ""
    script: str = shtab.complete(parser, shell=shell, preamble=preamble)
    print(script, end="")
    return 0


def api_argument(command: argparse.ArgumentParser, **options: Any) -> None:
    completes(command.add_argument("api", metavar="API", **options), API_NAMES)


def completes(argument: argparse.Action, how: dict[str, str]) -> None:
    # shtab reads this attribute; argparse ignores it.
    setattr(argument, "complete", how)  # noqa: B010
