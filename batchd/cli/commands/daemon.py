"""The daemon itself: ``serve`` runs it, ``check-config`` checks its config file, ``status``
and ``prune`` ask a running one."""

from __future__ import annotations

import argparse
import sys

from batchd.cli.commands import client_of
from batchd.cli.exits import EXIT_ERROR
from batchd.cli.render import print_json, print_table, size_text, slots_gpus


def serve(args: argparse.Namespace) -> int:
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


def check_config(args: argparse.Namespace) -> int:
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


def status(args: argparse.Namespace) -> int:
    report = client_of(args).status()
    if args.output == "json":
        return print_json(report)
    usage = report["disk_usage"]
    print_table(
        None,
        [
            ["version", report["version"]],
            ["state dir", report["state_dir"]],
            [
                "disk use",
                ", ".join(f"{part} {size_text(size)}" for part, size in usage.items()),
            ],
            ["GPUs", ",".join(map(str, report["gpus"])) or "none"],
            ["max workers", str(report["max_workers"])],
            ["active jobs", str(len(report["active_jobs"]))],
        ],
    )
    rows = [
        [w["job_id"], str(w["slot"]), str(w["pid"]), w["state"], slots_gpus(w)]
        for w in report["workers"]
    ]
    if rows:
        print()
        print_table(["JOB ID", "SLOT", "PID", "STATE", "GPUS"], rows)
    return 0


def prune(args: argparse.Namespace) -> int:
    report = client_of(args).prune(dry_run=args.dry_run)
    if args.output == "json":
        return print_json(report)
    verb = "would prune" if report["dry_run"] else "pruned"
    print(
        f"{verb} {len(report['jobs'])} finished job(s) older than "
        f"{report['retention_days']:g} days ({size_text(report['log_bytes'])} of logs)"
    )
    for job_id in report["jobs"]:
        print(f"  {job_id}")
    return 0
