"""``pause``/``resume`` a job and ``pause-api``/``resume-api`` an API: leased batches
finish, nothing more is leased until the resume."""

from __future__ import annotations

import argparse

from batchd.cli.commands import client_of


def pause(args: argparse.Namespace) -> int:
    status = client_of(args).pause_job(args.api, args.job_id)
    print(f"paused job {args.job_id} (status {status['status']})")
    return 0


def resume(args: argparse.Namespace) -> int:
    status = client_of(args).resume_job(args.api, args.job_id)
    print(f"resumed job {args.job_id} (status {status['status']})")
    return 0


def pause_api(args: argparse.Namespace) -> int:
    return _said(client_of(args).pause_api(args.api))


def resume_api(args: argparse.Namespace) -> int:
    return _said(client_of(args).resume_api(args.api))


def _said(answer: dict[str, object]) -> int:
    jobs = answer["jobs"]
    count = len(jobs) if isinstance(jobs, list) else 0
    print(f"{answer['message']} ({count} unfinished job{'s' * (count != 1)})")
    return 0
