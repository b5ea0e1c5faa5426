"""What each ``batchd`` command does, by group: ``daemon`` (serve, check-config, status,
prune), ``apis`` (deploy, apis, delete) and ``jobs`` (submit, get, logs, stop, retry,
results, failed). A command takes the parsed arguments and returns the exit code; it
prints through :mod:`batchd.cli.render`.
"""

from __future__ import annotations

import argparse

from batchd.cli.exits import EXIT_USAGE, CliError
from batchd.client import Client


def client_of(args: argparse.Namespace) -> Client:
    """The client of --url/--token (else BATCHD_URL/BATCHD_TOKEN); a URL that cannot be a
    daemon's, or a bad --reconnect-timeout, is a usage error before anything is sent."""
    try:
        return Client(
            url=args.url,
            token=args.token,
            reconnect_timeout=getattr(args, "reconnect_timeout", None),
        )
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
