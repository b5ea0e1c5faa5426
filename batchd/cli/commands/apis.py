"""Deployed APIs: ``deploy`` a project folder, list them (``apis``), ``delete`` one."""

from __future__ import annotations

import argparse
import sys
import time

from batchd.cli.commands import client_of
from batchd.cli.exits import CliError
from batchd.cli.render import ago, dash, print_json, print_table, size_text


def deploy(args: argparse.Namespace) -> int:
    try:
        # pip's lines while the API's venv is built, where someone watches.
        progress = _show_progress if sys.stderr.isatty() else None
        answer = client_of(args).deploy(
            args.project, check=args.check, config=args.config, name=args.name, progress=progress
        )
    except OSError as exc:
        raise CliError(f"cannot read {exc.filename or args.project}: {exc.strerror}") from None
    for api in answer.get("apis", [answer]):
        unchanged = " (unchanged: same as the latest version)" if api.get("unchanged") else ""
        print(f"deployed {api['name']} version {api['version']} ({api['files']} files){unchanged}")
        for warning in api.get("warnings", []):
            print(f"warning: {api['name']}: {warning}", file=sys.stderr)
    return 0


def _show_progress(line: str) -> None:
    print(f"  {line}", file=sys.stderr, flush=True)


def list_apis(args: argparse.Namespace) -> int:
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
            "-" if api.get("size") is None else size_text(api["size"]),
            api["endpoint"],
        ]
        for api in apis
    ]
    print_table(["API", "VERSION", "DEPLOYED", "FILES", "SIZE", "ENDPOINT"], rows)
    return 0


def delete(args: argparse.Namespace) -> int:
    answer = client_of(args).delete(args.api)
    stopped = answer.get("stopped_jobs") or []
    jobs = "job" if len(stopped) == 1 else "jobs"
    suffix = f" (stopped {len(stopped)} {jobs}: {', '.join(stopped)})" if stopped else ""
    print(f"{answer['message']}{suffix}")
    return 0
