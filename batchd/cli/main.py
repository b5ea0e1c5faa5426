"""The `batchd` entry point: parse the arguments, run one command, turn a failure into one
line on stderr and an exit code.

``batchd serve`` runs the daemon; every other command talks to one through
:class:`batchd.client.Client`. `rich`, pydantic and the daemon are imported inside the
commands that need them, so ``import batchd.cli.main`` stays cheap.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from batchd.cli.exits import (
    EXIT_DAEMON_LOST,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CliError,
)
from batchd.cli.parser import build_parser
from batchd.client import BatchdError, DaemonLost


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        # Bare `batchd`, as kubectl does: the help, on stdout, and success.
        parser.print_help()
        return 0
    try:
        result: int = args.run(args)
        return result
    except BatchdError as exc:
        where = f" (field: {exc.field})" if exc.field else ""
        print(f"error: {exc.message}{where}", file=sys.stderr)
        # Status 0: no answer at all (DaemonLost after waiting, a 503 one included).
        lost = exc.status == 0 or isinstance(exc, DaemonLost)
        return EXIT_DAEMON_LOST if lost else EXIT_ERROR
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except UnicodeEncodeError as exc:
        # An argument that is not UTF-8 (a byte name, read through surrogate escapes) cannot
        # go into a URL: one line naming it, as for any other bad argument.
        if not isinstance(exc.object, str) or not _has_surrogates(exc.object):
            raise
        print(f"error: argument {os.fsencode(exc.object)!r} is not UTF-8", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `batchd results ... | head`: the reader left; say nothing more to it.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR


def _has_surrogates(text: str) -> bool:
    return any("\udc80" <= char <= "\udcff" for char in text)
