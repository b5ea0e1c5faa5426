"""Each worker's workspace: a private, writable copy of the snapshot, and its TMPDIR."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batchd.pool.workspace import READY_PREFIX, copy_tree, disk_usage, remove_tree
from tests.conftest import Daemon, wait_for, wait_job

MiB = 1024 * 1024

WRITER = """
import os, tempfile

class Handler:
    def __init__(self, config, job_spec):
        # As Cortex's ONNX example does: fetch the model into the working directory.
        with open("model.onnx", "w") as out:
            out.write("weights for " + job_spec["job_id"])
        self.job_id = job_spec["job_id"]

    def handle_batch(self, payload):
        with open("data.txt") as data:
            before = data.read()
        with open("data.txt", "w") as data:
            data.write("overwritten by " + self.job_id)
        with open("leftover-" + self.job_id, "w") as out:
            out.write("x")
        with tempfile.NamedTemporaryFile(delete=False) as temp:
            temp.write(b"scratch")
        with open("model.onnx") as model:
            weights = model.read()
        return {
            "cwd": os.getcwd(),
            "workspace_inode": os.stat("..").st_ino,
            "model": weights,
            "data_before": before,
            "files": sorted(os.listdir(".")),
            "tmpdir": os.environ.get("TMPDIR"),
            "gettempdir": tempfile.gettempdir(),
            "temp": temp.name,
        }
"""

# Writes its pid and cwd to the gate folder, then holds its batch until `release` appears.
HOLDER = """
import os, time

class Handler:
    def __init__(self, config):
        self.gate = config["gate"]
        with open(os.path.join(self.gate, "worker-%d" % os.getpid()), "w") as out:
            out.write(os.getcwd())

    def handle_batch(self, payload):
        deadline = time.monotonic() + 100
        release = os.path.join(self.gate, "release")
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.02)
"""

PAIR = """
import os, time

class Handler:
    def __init__(self, config):
        self.gate = config["gate"]
        with open("mine.txt", "w") as out:
            out.write(str(os.getpid()))
        open(os.path.join(self.gate, str(os.getpid())), "w").close()

    def handle_batch(self, payload):
        # Both workers have written their file before either reads its own.
        deadline = time.monotonic() + 100
        while len(os.listdir(self.gate)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        with open("mine.txt") as mine:
            return {"pid": os.getpid(), "cwd": os.getcwd(), "mine": mine.read(),
                    "files": sorted(os.listdir("."))}
"""

FILLER = """
import os, time

class Handler:
    def __init__(self, config):
        if config["fill_in"] == "init":
            fill()

    def handle_batch(self, payload):
        fill()

def fill():
    with open("big.bin", "wb") as out:
        out.write(b"\\1" * (4 * 1024 * 1024))
        out.flush()
        os.fsync(out.fileno())
    # Wait to be killed for it.
    deadline = time.monotonic() + 100
    while time.monotonic() < deadline:
        time.sleep(0.05)
"""


def one_item(config: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"workers": 1, "item_list": {"items": [1], "batch_size": 1}, "config": config or {}}


def snapshot_of(daemon: Daemon, api: str) -> Path:
    (snapshot,) = (daemon.state_dir / "apis" / api).iterdir()
    return snapshot


def tree(root: Path) -> dict[str, bytes]:
    """Every file of a tree: its relative path, mode and bytes."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            key = f"{path.relative_to(root)} {path.stat().st_mode:o}"
            found[key] = path.read_bytes()
    return found


def workspaces(daemon: Daemon) -> list[str]:
    """Workspaces of workers (not the copies prepared ahead of need)."""
    root = daemon.state_dir / "work"
    if not root.exists():
        return []
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(READY_PREFIX))


def run_job(daemon: Daemon, api: str, body: dict[str, Any]) -> tuple[str, list[Any]]:
    client = daemon.client
    job_id = str(client.submit(api, body)["job_id"])
    status = wait_job(client, api, job_id)
    assert status["status"] == "succeeded", status.get("error")
    return job_id, [row["result"] for row in client.results(api, job_id)]


def worker_files(gate: Path) -> dict[int, Path]:
    """pid -> cwd of the workers that reached __init__."""
    return {
        int(path.name.split("-")[1]): Path(path.read_text())
        for path in gate.glob("worker-*")
        if path.read_text()
    }


def hold_one_worker(
    daemon: Daemon, make_project: Callable[..., Path], tmp_path: Path
) -> tuple[str, Path, int, Path]:
    """A job whose one worker waits in handle_batch until `gate/release` exists: the job id,
    the gate, and the worker's pid and current directory."""
    daemon.client.deploy(make_project("holder", HOLDER))
    gate = tmp_path / "gate"
    gate.mkdir()
    job_id = daemon.client.submit("holder", one_item({"gate": str(gate)}))["job_id"]
    ((pid, cwd),) = wait_for(lambda: worker_files(gate), what="a worker").items()
    return job_id, gate, pid, cwd


def test_handler_writes_a_file_in_its_cwd_in_init_and_reads_it_back(
    make_daemon: Callable[..., Daemon], make_project: Callable[..., Path]
) -> None:
    daemon = make_daemon()
    daemon.client.deploy(make_project("writer", WRITER, files={"data.txt": "original"}))
    snapshot = snapshot_of(daemon, "writer")
    job_id, (result,) = run_job(daemon, "writer", one_item())
    assert result["model"] == f"weights for {job_id}"
    assert result["data_before"] == "original"
    cwd = Path(result["cwd"])
    assert cwd.parent.parent == (daemon.state_dir / "work").resolve()
    assert cwd.name == "project"
    # Nothing of it reached the deployed snapshot.
    assert sorted(p.name for p in snapshot.iterdir()) == ["data.txt", "handler.py"]
    assert (snapshot / "data.txt").read_text() == "original"


def test_a_later_job_starts_from_the_snapshot_and_leaves_it_unchanged(
    make_daemon: Callable[..., Daemon], make_project: Callable[..., Path]
) -> None:
    daemon = make_daemon()
    daemon.client.deploy(make_project("writer", WRITER, files={"data.txt": "original"}))
    snapshot = snapshot_of(daemon, "writer")
    deployed = tree(snapshot)
    # The second job's worker is the spare, adopted: it too starts from the snapshot.
    _, (first,) = run_job(daemon, "writer", one_item())
    second_id, (second,) = run_job(daemon, "writer", one_item())
    assert first["data_before"] == second["data_before"] == "original"
    assert second["files"] == ["data.txt", "handler.py", f"leftover-{second_id}", "model.onnx"]
    assert second["model"] == f"weights for {second_id}"
    assert first["cwd"] != second["cwd"]
    # Byte for byte, mode for mode, what was deployed.
    assert tree(snapshot) == deployed


def test_tmpdir_is_inside_the_workspace_for_fresh_and_spare_workers(
    make_daemon: Callable[..., Daemon], make_project: Callable[..., Path]
) -> None:
    daemon = make_daemon()
    daemon.client.deploy(make_project("writer", WRITER, files={"data.txt": "original"}))
    for _ in range(2):
        _, (result,) = run_job(daemon, "writer", one_item())
        tmp = str(Path(result["cwd"]).parent / "tmp")
        assert result["tmpdir"] == result["gettempdir"] == tmp
        assert os.path.dirname(result["temp"]) == tmp


def test_two_workers_of_one_job_do_not_see_each_others_files(
    make_daemon: Callable[..., Daemon], make_project: Callable[..., Path], tmp_path: Path
) -> None:
    daemon = make_daemon()
    daemon.client.deploy(make_project("pair", PAIR))
    gate = tmp_path / "gate"
    gate.mkdir()
    body = {"workers": 2, "item_list": {"items": [1, 2], "batch_size": 1}}
    _, results = run_job(daemon, "pair", {**body, "config": {"gate": str(gate)}})
    assert len(results) == 2
    assert results[0]["pid"] != results[1]["pid"]
    assert results[0]["cwd"] != results[1]["cwd"]
    for result in results:
        assert result["mine"] == str(result["pid"])
        assert result["files"] == ["handler.py", "mine.txt"]


def test_workspace_is_removed_when_the_worker_exits_and_when_the_daemon_stops(
    make_daemon: Callable[..., Daemon], make_project: Callable[..., Path]
) -> None:
    daemon = make_daemon()
    daemon.client.deploy(make_project("writer", WRITER, files={"data.txt": "original"}))
    _, (result,) = run_job(daemon, "writer", one_item())
    workspace = Path(result["cwd"]).parent
    wait_for(lambda: not workspace.exists(), what="the workspace removed")
    wait_for(lambda: workspaces(daemon) == [], what="no workspace left")
    daemon.stop()
    # The copies prepared ahead of need go too.
    assert list((daemon.state_dir / "work").iterdir()) == []
    assert (daemon.state_dir / "work").stat().st_mode & 0o777 == 0o700


def test_workspace_is_removed_after_its_worker_is_killed(
    make_daemon: Callable[..., Daemon], make_project: Callable[..., Path], tmp_path: Path
) -> None:
    daemon = make_daemon()
    job_id, gate, pid, cwd = hold_one_worker(daemon, make_project, tmp_path)
    assert cwd.exists()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not cwd.parent.exists(), what="the killed worker's workspace removed")
    (gate / "release").touch()
    wait_job(daemon.client, "holder", job_id)
    wait_for(lambda: workspaces(daemon) == [], what="no workspace left")


def test_workspaces_are_swept_when_the_daemon_restarts_after_kill_9(
    make_daemon: Callable[..., Daemon], make_project: Callable[..., Path], tmp_path: Path
) -> None:
    daemon = make_daemon()
    job_id, gate, pid, cwd = hold_one_worker(daemon, make_project, tmp_path)
    daemon.kill()
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), what="the worker gone with the daemon")
    # Nobody was left to remove it.
    assert cwd.exists()
    daemon.start()
    wait_for(lambda: not cwd.parent.exists(), what="the dead daemon's workspace swept")
    # The job resumed on a new worker, in a new workspace.
    wait_for(lambda: len(worker_files(gate)) == 2, what="a new worker")
    (gate / "release").touch()
    wait_job(daemon.client, "holder", job_id)
    wait_for(lambda: workspaces(daemon) == [], what="no workspace left")


def test_disk_limit_fails_the_batch_with_an_error_naming_it(
    make_daemon: Callable[..., Daemon], make_project: Callable[..., Path]
) -> None:
    daemon = make_daemon()
    daemon.client.deploy(make_project("filler", FILLER, extra_toml='[compute]\ndisk = "2M"\n'))
    body = {**one_item({"fill_in": "batch"}), "max_receive_count": 1}
    job_id = daemon.client.submit("filler", body)["job_id"]
    status = wait_job(daemon.client, "filler", job_id)
    assert status["status"] == "completed_with_failures"
    (failed,) = daemon.client.failed("filler", job_id)
    assert "worker's workspace went over its disk limit" in failed["error"]
    allowed = "2.0 MiB (2097152 bytes) allowed ([compute] disk or max_workspace_size)"
    assert allowed in failed["error"]
    wait_for(lambda: workspaces(daemon) == [], what="no workspace left")


def test_disk_limit_in_init_ends_the_job_naming_the_daemon_default(
    make_daemon: Callable[..., Daemon], make_project: Callable[..., Path]
) -> None:
    daemon = make_daemon(max_workspace_size=2 * MiB, max_worker_restarts=0)
    daemon.client.deploy(make_project("filler", FILLER))
    job_id = daemon.client.submit("filler", one_item({"fill_in": "init"}))["job_id"]
    status = wait_job(daemon.client, "filler", job_id)
    assert status["status"] == "worker_error"
    job = daemon.client.get_job("filler", job_id)["job_status"]
    assert "worker's workspace went over its disk limit" in job["error"]
    assert "2.0 MiB (2097152 bytes) allowed" in job["error"]


def test_copy_keeps_links_and_executable_bits_and_is_writable(tmp_path: Path) -> None:
    source = tmp_path / "snapshot"
    (source / "lib").mkdir(parents=True)
    (source / "lib" / "model.py").write_text("x = 1\n")
    (source / "run.sh").write_text("#!/bin/sh\n")
    (source / "run.sh").chmod(0o555)
    (source / "alias.py").symlink_to("lib/model.py")
    (source / "lib" / "model.py").chmod(0o444)
    (source / "lib").chmod(0o555)
    target = tmp_path / "copy"
    copy_tree(source, target)
    assert os.readlink(target / "alias.py") == "lib/model.py"
    assert (target / "alias.py").read_text() == "x = 1\n"
    assert (target / "run.sh").stat().st_mode & 0o777 == 0o755
    assert (target / "lib" / "model.py").stat().st_mode & 0o777 == 0o644
    assert (target / "lib").stat().st_mode & 0o777 == 0o755
    (target / "lib" / "model.py").write_text("x = 2\n")
    (target / "lib" / "new.py").write_text("")
    assert (source / "lib" / "model.py").read_text() == "x = 1\n"
    assert disk_usage(target) >= disk_usage(target / "lib") > 0
    (source / "lib").chmod(0o755)


def test_no_room_for_a_workspace_delays_the_worker_instead_of_failing_the_job(
    make_daemon: Callable[..., Daemon],
    make_project: Callable[..., Path],
    make_tiny_fs: Callable[[int], Path],
) -> None:
    tiny = make_tiny_fs(16)
    daemon = make_daemon(start=False)
    daemon.state_dir = tiny / "state"
    daemon.start()
    # A project too big for what is left once the disk is filled; a job row is not.
    daemon.client.deploy(make_project("big", WRITER, files={"data.txt": "d" * (3 * MiB)}))
    filler = tiny / "filler"
    free = os.statvfs(tiny).f_bavail * os.statvfs(tiny).f_frsize
    filler.write_bytes(b"\0" * max(0, free - 1 * MiB))
    job_id = daemon.client.submit("big", one_item())["job_id"]
    wait_for(
        lambda: "no disk space for a worker's workspace" in daemon.output(),
        what="the worker's start put off",
    )
    assert daemon.client.get_job("big", job_id)["job_status"]["status"] == "running"
    filler.unlink()
    assert wait_job(daemon.client, "big", job_id)["status"] == "succeeded"


def test_the_next_worker_takes_the_copy_prepared_ahead_of_need(
    make_daemon: Callable[..., Daemon], make_project: Callable[..., Path]
) -> None:
    daemon = make_daemon()
    daemon.client.deploy(make_project("writer", WRITER, files={"data.txt": "original"}))
    run_job(daemon, "writer", one_item())
    # Once the first worker had begun its batch, a copy for the next one was prepared.
    work = daemon.state_dir / "work"
    (ready,) = wait_for(
        lambda: [p for p in work.iterdir() if p.name.startswith(READY_PREFIX)],
        what="a copy prepared ahead of need",
    )
    wait_for(lambda: (ready / "tmp").exists(), what="the copy complete")
    inode = ready.stat().st_ino
    _, (result,) = run_job(daemon, "writer", one_item())
    # The same folder, renamed: no copy was made while the job waited.
    assert result["workspace_inode"] == inode
    assert not ready.exists()


def test_a_workspace_nested_past_the_recursion_limit_and_path_max_is_removed(
    tmp_path: Path,
) -> None:
    """A handler can nest folders deeper than Python's recursion limit, and past PATH_MAX by
    creating them one relative step at a time; shutil.rmtree raised RecursionError out of the
    daemon's workspace removal (and its sweep at start) for such a tree."""
    top = tmp_path / "workspace"
    top.mkdir()
    folder = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        # 3,000 levels of 9 characters: 30,000 characters, far past PATH_MAX (4,096).
        for level in range(3000):
            os.mkdir("deepening", dir_fd=folder)
            with open(os.open("f", os.O_WRONLY | os.O_CREAT, dir_fd=folder), "w") as file:
                file.write("x")
            if level == 10:
                os.symlink("/etc", "link", dir_fd=folder)
                os.mkdir("closed", 0o500, dir_fd=folder)
            below = os.open("deepening", os.O_RDONLY | os.O_DIRECTORY, dir_fd=folder)
            os.close(folder)
            folder = below
    finally:
        os.close(folder)
    assert remove_tree(top) is True
    assert not top.exists()
    # What a link pointed at is left alone.
    assert Path("/etc/passwd").exists()
