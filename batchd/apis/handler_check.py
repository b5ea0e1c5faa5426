"""The deploy-time check: does the Handler import, under the API's interpreter and env?

A broken ``handler.py`` (a syntax error, a missing library) would otherwise only show at
the first job, as workers that fail to start. The check runs
:mod:`batchd.worker.probe` once in a subprocess, in the new snapshot folder, and turns a
failure into a 422 carrying the handler's traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

from batchd.errors import Invalid
from batchd.worker.probe import EXIT_IMPORTED, REPORT_MARKER

# Only the end of what the import wrote to stderr is kept: the traceback is there.
REPORT_TAIL_BYTES = 16 * 1024
FIELD = "handler.path"
# Seconds to read the rest of the report once the probe has exited.
REPORT_READ_TIMEOUT = 5.0


async def check_handler_imports(
    python: str, snapshot: Path, handler_path: str, env: dict[str, str], timeout: float
) -> None:
    """Raise Invalid (a 422) unless `handler_path` imports and defines class Handler."""
    process = await asyncio.create_subprocess_exec(
        python,
        "-m",
        "batchd.worker.probe",
        handler_path,
        cwd=snapshot,
        env={**env, "PYTHONDONTWRITEBYTECODE": "1"},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        # Its own group, so a timeout also ends whatever the import started.
        start_new_session=True,
    )
    reader = asyncio.create_task(_tail(process))
    try:
        async with asyncio.timeout(timeout):
            code = await process.wait()
    except TimeoutError:
        raise Invalid(
            f"importing {handler_path} took over {timeout:g}s (handler_check_timeout); "
            "deploy with --no-check (?check=false) to skip the check",
            field=FIELD,
        ) from None
    finally:
        # The probe, and whatever its import started and left behind.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        if process.returncode is None:
            await process.wait()
        try:
            stderr = await asyncio.wait_for(reader, REPORT_READ_TIMEOUT)
        except TimeoutError:
            stderr = b"(no report: a process the import started still holds its stderr)"
    if code == EXIT_IMPORTED:
        return
    # Paths relative to the project, as the user knows them (not the upload's folder).
    text = stderr.decode(errors="replace").replace(f"{snapshot}{os.sep}", "")
    _, marker, report = text.rpartition(REPORT_MARKER)
    if not marker:
        report = f"the check exited with code {code}:\n{text}"
    raise Invalid(f"{handler_path} cannot be imported:\n{report.strip()}", field=FIELD)


async def _tail(process: asyncio.subprocess.Process) -> bytes:
    assert process.stderr is not None
    kept = b""
    while chunk := await process.stderr.read(REPORT_TAIL_BYTES):
        kept = (kept + chunk)[-REPORT_TAIL_BYTES:]
    return kept
