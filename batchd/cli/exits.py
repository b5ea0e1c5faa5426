"""How a command ends: the exit codes, and the one-line local error that carries one.

0 success; 1 an error the daemon answered (or a local one); 2 a usage error; 69 the daemon
could not be reached, or a waiting command lost it for longer than --reconnect-timeout
(sysexits' EX_UNAVAILABLE); 130 interrupted (Ctrl-C). A command that waits for a job
(``get --watch``, ``submit --wait``) exits with the code of how the job ended (see
``jobs.WATCH_EXIT_CODES``: 0 to 4).
"""

from __future__ import annotations

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_DAEMON_LOST = 69
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A local problem (an unreadable file, bad arguments): one line, exit code `code`."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code
