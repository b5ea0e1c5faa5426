"""What each ``batchd`` command does, by group: ``daemon`` (serve, check-config, status,
prune), ``apis`` (deploy, apis, delete) and ``jobs`` (submit, get, logs, stop, retry,
results, failed). A command takes the parsed arguments and returns the exit code; it
prints through :mod:`batchd.cli.render`.
"""

from __future__ import annotations

import argparse

from batchd.client import Client


def client_of(args: argparse.Namespace) -> Client:
    return Client(url=args.url, token=args.token)
