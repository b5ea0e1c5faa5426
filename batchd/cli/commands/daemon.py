"""The daemon itself: ``serve`` runs it, ``check-config`` checks its config file, ``status``
and ``prune`` ask a running one."""

from __future__ import annotations

import argparse
import os
import sys

from batchd.cli.commands import client_of
from batchd.cli.exits import EXIT_USAGE
from batchd.cli.render import print_json, print_table, size_text, slots_gpus

# A config `serve` refuses (a wrong key, an exposed listener without a token): the same
# exit code from `check-config`, so a deploy script can check a file the way serve would.
EXIT_CONFIG = EXIT_USAGE
# Where systemd puts the shipped unit's StateDirectory=batchd, and its credentials.
UNIT_STATE_DIRECTORY = "/var/lib/batchd"
CREDENTIALS_ROOT = "/run/credentials/"


def serve(args: argparse.Namespace) -> int:
    from batchd.config import ConfigError, load_config
    from batchd.daemon.logsetup import configure_logging
    from batchd.daemon.run import run

    overrides = {"listen": args.listen, "state_dir": args.state_dir, "log_format": args.log_format}
    try:
        config = load_config(args.config, overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(config.log_level, config.log_format)
    try:
        return run(config, args.deploy)
    except OSError as exc:
        # The port is taken, the state directory cannot be made, ...: say so, no traceback.
        print(f"error: {exc}", file=sys.stderr)
        return 1


def check_config(args: argparse.Namespace) -> int:
    """What ``serve --config FILE`` would refuse, with its exit code, and where it would
    keep its state."""
    from batchd.config import ConfigError, check_exposure, load_config
    from batchd.pool import memlimit

    try:
        config = load_config(args.config_file)
    except ConfigError as exc:
        # One line per problem, each naming the file already.
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    try:
        check_exposure(config)
        token_files = {
            "token_file": config.token_file,
            "read_only_token_file": config.read_only_token_file,
        }
        notes = [_token_note(path, key) for key, path in token_files.items()]
    except ConfigError as exc:
        print(f"{args.config_file}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    state = config.state_path
    print(f"{args.config_file}: ok (listen {config.listen}, state_dir {state})")
    print(f"state dir: {state} ({_state_dir_source(config.model_fields_set)})")
    for note in filter(None, notes):
        print(note)
    # As seen from this process: run it the way the daemon runs (its unit) to see the
    # daemon's view; a login shell's cgroup is not delegated.
    print(f"worker memory limits: {memlimit.choose().describe()}")
    return 0


def _state_dir_source(fields_set: set[str]) -> str:
    if "state_dir" in fields_set:
        return "state_dir in the file"
    if os.environ.get("STATE_DIRECTORY"):
        return "$STATE_DIRECTORY, from systemd's StateDirectory="
    return (
        "the default, from the current folder; under the shipped systemd unit, "
        f"StateDirectory=batchd makes it {UNIT_STATE_DIRECTORY}"
    )


def _token_note(path: str | None, key: str) -> str | None:
    """A token file is read as ``serve`` reads it, except a systemd credential, which only
    the unit's processes can see (LoadCredential= makes it as the service starts)."""
    from batchd.http.auth import read_token

    if path is None:
        return None
    if path.startswith(CREDENTIALS_ROOT) and not os.path.exists(path):
        return f"{key}: {path} is a systemd credential, made when the unit starts; not read here"
    read_token(path, key)
    return None


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
