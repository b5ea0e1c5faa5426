"""An API's .env sets LD_LIBRARY_PATH and MALLOC_ARENA_MAX, which take effect only when a
process starts (the dynamic loader and glibc read them at exec).

The pre-started spare worker once took such a job over: the variables were set in its
environment afterwards and changed nothing, so the handler could not load a library
from LD_LIBRARY_PATH. Such a launch now gets a worker started with them."""

from __future__ import annotations

import _ctypes
import shutil
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Daemon, wait_job
from tests.test_spare import spare_pids, wait_for

PROBE = "libbatchdprobe.so"

HANDLER = f"""
import ctypes, os

class Handler:
    def handle_batch(self, payload):
        try:
            ctypes.CDLL("{PROBE}")
            loaded = True
        except OSError:
            loaded = False
        # What the process was started with, not what was set in it later.
        with open("/proc/self/environ", "rb") as environ:
            at_exec = [entry.decode() for entry in environ.read().split(b"\\0") if entry]
        return {{"loaded": loaded, "pid": os.getpid(), "at_exec": at_exec}}
"""


def run_one(daemon: Daemon, api: str) -> dict[str, object]:
    client = daemon.client
    job_id = client.submit(api, {"workers": 1, "item_list": {"items": [1], "batch_size": 1}})[
        "job_id"
    ]
    assert wait_job(client, api, job_id)["status"] == "succeeded"
    (row,) = client.results(api, job_id)
    result: dict[str, object] = row["result"]
    return result


def test_ld_library_path_in_dotenv_is_set_when_the_worker_starts(
    make_daemon: Callable[..., Daemon], make_project: Callable[..., Path], tmp_path: Path
) -> None:
    libraries = tmp_path / "libraries"
    libraries.mkdir()
    # Any shared object will do: the loader finds it only through LD_LIBRARY_PATH.
    shutil.copy(_ctypes.__file__, libraries / PROBE)
    daemon = make_daemon()
    client = daemon.client
    client.deploy(make_project("plain", HANDLER))
    client.deploy(
        make_project(
            "preload",
            HANDLER,
            files={".env": f"LD_LIBRARY_PATH={libraries}\nMALLOC_ARENA_MAX=2\n"},
        )
    )
    plain = run_one(daemon, "plain")
    assert plain["loaded"] is False
    # A spare now waits, started with no LD_LIBRARY_PATH.
    (spare,) = wait_for(lambda: spare_pids(daemon), what="a spare worker")

    first = run_one(daemon, "preload")
    assert first["pid"] != spare
    assert first["loaded"] is True
    assert f"LD_LIBRARY_PATH={libraries}" in first["at_exec"]
    assert "MALLOC_ARENA_MAX=2" in first["at_exec"]

    # The spare started after it has the API's start-up environment: it may serve the
    # next job of that API, and does so as a fresh worker would.
    wait_for(lambda: spare_pids(daemon) - {spare}, what="a spare for the preload API")
    second = run_one(daemon, "preload")
    assert second["loaded"] is True
    assert "MALLOC_ARENA_MAX=2" in second["at_exec"]
