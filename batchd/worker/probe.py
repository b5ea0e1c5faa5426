"""Import an API's Handler once, as a worker would, and report why it cannot be imported.

Run by the daemon at deploy time as ``python -m batchd.worker.probe HANDLER_PATH`` under the
API's interpreter, in the snapshot folder, with the API's environment. Like the worker, it
imports nothing beyond the standard library (and the worker's own loader,
batchd.worker.loading).
"""

from __future__ import annotations

import os
import sys
import traceback

from batchd.worker.loading import handler_frames, load_handler_class

# The daemon reads the report after this line; the handler may have printed before it.
REPORT_MARKER = "--- batchd: the Handler could not be imported ---"
# Exit codes: imported, or not (with the report on stderr).
EXIT_IMPORTED = 0
EXIT_NOT_IMPORTED = 1


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m batchd.worker.probe HANDLER_PATH", file=sys.stderr)
        return 2
    try:
        load_handler_class(argv[1])
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # SystemExit too: a handler that exits on import is broken.
        report = traceback.format_exception(type(exc), exc, handler_frames(exc.__traceback__))
        sys.stderr.write(f"\n{REPORT_MARKER}\n{''.join(report)}")
        sys.stderr.flush()
        return EXIT_NOT_IMPORTED
    return EXIT_IMPORTED


if __name__ == "__main__":
    code = main(sys.argv)
    sys.stdout.flush()
    sys.stderr.flush()
    # Not sys.exit: it would wait for any thread the handler's import started.
    os._exit(code)
