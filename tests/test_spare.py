"""The spare worker: started ahead of need, adopted by the next job as if freshly started."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Daemon, wait_for, wait_job

HANDLER = """
import os, sys

class Handler:
    def __init__(self, config, job_spec):
        self.job_id = job_spec["job_id"]

    def handle_batch(self, payload):
        return {
            "pid": os.getpid(),
            "cwd": os.getcwd(),
            "path0": sys.path[0],
            "job": os.environ.get("BATCHD_JOB_ID"),
            "spare": os.environ.get("BATCHD_SPARE"),
            "dotenv": os.environ.get("FROM_DOTENV"),
            "own": self.job_id,
            "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }
"""


def spare_pids(daemon: Daemon) -> set[int]:
    """The daemon's children waiting to be adopted: a spare waits in its own directory."""
    assert daemon.process is not None
    home = (daemon.state_dir / "runtime" / "spare").resolve()
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == daemon.process.pid and fields[0] != "Z" and cwd == home:
            found.add(int(entry.name))
    return found


def run_one(daemon: Daemon, api: str) -> dict[str, object]:
    client = daemon.client
    job_id = client.submit(api, {"workers": 1, "item_list": {"items": [1], "batch_size": 1}})[
        "job_id"
    ]
    assert wait_job(client, api, job_id)["status"] == "succeeded"
    (row,) = client.results(api, job_id)
    result: dict[str, object] = row["result"]
    assert result["job"] == result["own"] == job_id
    return result


def test_the_next_job_adopts_the_spare_with_its_own_directory_and_environment(
    make_daemon: Callable[..., Daemon], make_project: Callable[..., Path]
) -> None:
    daemon = make_daemon()
    project = make_project("spare", HANDLER, files={".env": "FROM_DOTENV=yes\n"})
    daemon.client.deploy(project)
    first = run_one(daemon, "spare")
    # The first worker was started fresh; since then one spare waits.
    wait_for(lambda: len(spare_pids(daemon)) == 1, what="a spare worker")
    (spare,) = spare_pids(daemon)
    assert spare != first["pid"]
    second = run_one(daemon, "spare")
    assert second["pid"] == spare
    # Exactly what a fresh worker sees: the job's directory first on sys.path, its
    # environment, and nothing left of the spare's.
    # Each worker runs in a workspace of its own, first on its sys.path.
    assert second["cwd"] == second["path0"] and first["cwd"] == first["path0"]
    assert second["cwd"] != first["cwd"]
    assert os.path.realpath(str(second["cwd"])).startswith(os.path.realpath(daemon.state_dir))
    assert second["spare"] is None and second["dotenv"] == "yes"
    assert second["cuda"] == first["cuda"] == ""
    # And another spare took its place.
    wait_for(lambda: spare_pids(daemon) - {spare}, what="a new spare worker")


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_the_spare_dies_with_the_daemon(
    make_daemon: Callable[..., Daemon], make_project: Callable[..., Path], how: str
) -> None:
    daemon = make_daemon()
    daemon.client.deploy(make_project("spare", HANDLER))
    run_one(daemon, "spare")
    wait_for(lambda: len(spare_pids(daemon)) == 1, what="a spare worker")
    (spare,) = spare_pids(daemon)
    daemon.stop() if how == "stop" else daemon.kill()
    wait_for(lambda: not Path(f"/proc/{spare}").exists() or _zombie(spare), what="spare gone")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
