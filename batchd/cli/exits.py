"""How a command ends: the exit codes, and the one-line local error that carries one."""

from __future__ import annotations

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A local problem (an unreadable file, bad arguments): one line, exit code `code`."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code
