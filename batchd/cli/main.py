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

from batchd.cli.exits import EXIT_DAEMON_LOST, EXIT_ERROR, EXIT_INTERRUPTED, CliError
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
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `batchd results ... | head`: the reader left; say nothing more to it.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR
