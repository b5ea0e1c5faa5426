"""The cgroup v2 scenarios, run inside the VM as root against batchd.service.

Usage: python scenarios.py RESULTS_JSON  (the venv's python: it imports batchd.client)

The daemon runs under the real systemd with the project's unit (Delegate=yes), as the
unprivileged batchd user. Every figure and check lands in RESULTS_JSON for the host's
test (tests/faults/test_cgroup_v2.py) to assert on; nothing is asserted here, so one
failing scenario does not hide the others.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batchd.client import Client

MEM = 64 * 1024 * 1024
JOB_TIMEOUT_S = 240.0
GONE_TIMEOUT_S = 30.0
POLL_S = 0.1
CGROUP_ROOT = Path("/sys/fs/cgroup")
SERVICE = "batchd.service"

HANDLER = """
import os, subprocess, time

CHUNK = 16 * 1024 * 1024


def own_cgroup(pid="self"):
    with open(f"/proc/{pid}/cgroup") as f:
        return next(line[3:].strip() for line in f if line.startswith("0::"))


def started_at():
    # Seconds after boot this process started (field 22 of /proc/self/stat, in ticks).
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[19]) / os.sysconf("SC_CLK_TCK")


class Handler:
    def __init__(self, config):
        pass

    def handle_batch(self, payload):
        what = payload[0]
        group = own_cgroup()
        if what == "limit":
            with open(f"/sys/fs/cgroup{group}/memory.max") as f:
                memory_max = f.read().strip()
            return [{"cgroup": group, "memory_max": memory_max, "started_at": started_at()}]
        if what == "escape":
            # A new session: out of the worker's process group, out of its group guard's reach.
            child = subprocess.Popen(["sleep", "3600"], start_new_session=True)
            return [{
                "cgroup": group,
                "escapee": child.pid,
                "escapee_cgroup": own_cgroup(child.pid),
                "escaped_group": os.getpgid(child.pid) != os.getpgrp(),
            }]
        if what == "hog":
            hog = []
            while True:
                hog.append(b"x" * CHUNK)
        return payload
"""


def uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def main_pid() -> int:
    out = subprocess.run(
        ["systemctl", "show", "-P", "MainPID", SERVICE], capture_output=True, text=True
    )
    return int(out.stdout.strip() or 0)


def is_active() -> bool:
    out = subprocess.run(["systemctl", "is-active", SERVICE], capture_output=True, text=True)
    return out.stdout.strip() == "active"


def cgroup_of(pid: int) -> str:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line[3:]
    return ""


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return True


def project(root: Path) -> Path:
    folder = root / "cgv2"
    folder.mkdir()
    (folder / "handler.py").write_text(HANDLER)
    (folder / "batchd.toml").write_text(
        f'name = "cgv2"\n[handler]\npath = "handler.py"\n[compute]\nmem = "{MEM}"\n'
    )
    return folder


def run_job(client: Client, items: list[str]) -> tuple[dict[str, Any], float]:
    start = time.monotonic()
    job = client.submit(
        "cgv2", {"item_list": {"items": items, "batch_size": 1}, "max_receive_count": 1}
    )
    status = dict(client.wait("cgv2", job["job_id"], poll_interval=0.2, timeout=JOB_TIMEOUT_S))
    status["job_id"] = job["job_id"]
    return status, round(time.monotonic() - start, 2)


def only_result(client: Client, job_id: str) -> dict[str, Any]:
    """The one batch's result: the handler's list of one object per item."""
    ((result,),) = [record["result"] for record in client.results("cgv2", job_id)]
    return dict(result)


def limit(client: Client) -> dict[str, Any]:
    """(c) Two jobs in turn: a fresh worker, then the spare one adopted for the second."""
    runs = []
    for _ in range(2):
        submitted_at = uptime()
        status, seconds = run_job(client, ["limit"])
        result = only_result(client, status["job_id"])
        runs.append(
            {
                "status": status["status"],
                "seconds": seconds,
                "memory_max": int(result["memory_max"]),
                "cgroup": result["cgroup"],
                "spare": result["started_at"] < submitted_at,
            }
        )
    return {"mem": MEM, "runs": runs}


def escape(client: Client) -> dict[str, Any]:
    """(b) The handler starts `sleep` in a new session and returns; the worker ends with
    the job. The sleep must be gone once it has."""
    status, seconds = run_job(client, ["escape"])
    result = only_result(client, status["job_id"])
    pid = int(result["escapee"])
    ended = time.monotonic()
    gone = wait_until(lambda: not alive(pid), GONE_TIMEOUT_S)
    return {
        "status": status["status"],
        "seconds": seconds,
        "escaped_group": result["escaped_group"],
        "same_cgroup": result["escapee_cgroup"] == result["cgroup"],
        "cgroup": result["cgroup"],
        "escapee_gone": gone,
        "gone_after_s": round(time.monotonic() - ended, 2),
    }


def oom(client: Client) -> dict[str, Any]:
    """(a) A batch that allocates past compute.mem, one that does not."""
    pid_before = main_pid()
    status, seconds = run_job(client, ["hog"])
    failed = list(client.failed("cgv2", status["job_id"]))
    kernel = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
    after, after_s = run_job(client, ["limit"])
    return {
        "status": status["status"],
        "seconds": seconds,
        "error": failed[0]["error"] if failed else None,
        "job_error": status.get("error"),
        "kernel_memcg_ooms": kernel.count("Memory cgroup out of memory"),
        "daemon_pid_unchanged": pid_before == main_pid() and pid_before > 0,
        "daemon_active": is_active(),
        "next_job": after["status"],
        "next_job_s": after_s,
    }


def restart(client: Client) -> dict[str, Any]:
    """systemd restarts the service: the new daemon builds its tree again (systemd must
    be able to put the new main process into the service's group) and bounds workers."""
    before = main_pid()
    done = subprocess.run(
        ["systemctl", "restart", SERVICE], capture_output=True, text=True, timeout=120
    )
    after = main_pid()
    status, seconds = run_job(client, ["limit"])
    result = only_result(client, status["job_id"])
    return {
        "restart_rc": done.returncode,
        "new_daemon": after not in (0, before),
        "daemon_cgroup": cgroup_of(after) if after else "",
        "status": status["status"],
        "memory_max": int(result["memory_max"]),
        "job_s": seconds,
    }


def leftovers() -> list[str]:
    workers = CGROUP_ROOT / "system.slice" / SERVICE / "workers"
    return sorted(p.name for p in workers.iterdir() if p.is_dir()) if workers.is_dir() else []


def main() -> int:
    out = Path(sys.argv[1])
    results: dict[str, Any] = {"uptime_at_start": uptime()}
    token = Path("/etc/batchd/token").read_text().strip()
    client = Client("http://127.0.0.1:8780", token, timeout=60)
    results["daemon_cgroup"] = cgroup_of(main_pid())
    with tempfile.TemporaryDirectory() as tmp:
        client.deploy(project(Path(tmp)))
    scenarios = (("limit", limit), ("escape", escape), ("oom", oom), ("restart", restart))
    for name, scenario in scenarios:
        start = time.monotonic()
        try:
            results[name] = scenario(client)
        except Exception:
            results[name] = {"exception": traceback.format_exc()}
        results[name]["scenario_s"] = round(time.monotonic() - start, 2)
        out.write_text(json.dumps(results, indent=1))
    # A job ends before its last worker is reaped: give the groups a moment to go.
    start = time.monotonic()
    wait_until(lambda: not leftovers(), GONE_TIMEOUT_S)
    results["worker_groups_left"] = leftovers()
    results["worker_groups_gone_s"] = round(time.monotonic() - start, 2)
    results["daemon_active_at_end"] = is_active()
    out.write_text(json.dumps(results, indent=1))
    print(f"BATCHD-VM results written {os.path.getsize(out)} bytes", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
