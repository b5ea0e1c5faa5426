"""Worker cgroups on cgroup v2 under systemd's delegation, proven in a VM.

One boot of a Debian bookworm VM (tests/faults/cgroup_vm.py) runs batchd.service as the
batchd user under the real systemd with the project's unit, and the three scenarios of
tests/faults/vm/scenarios.py; the tests below hold its figures to their bars. Full runs
only (`make faults`): the boot alone is a minute or more under TCG.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.faults import cgroup_vm
from tests.faults.conftest import FULL, OOM_ERROR

SERVICE_GROUP = "/system.slice/batchd.service"
WORKER_GROUP_PREFIX = f"{SERVICE_GROUP}/workers/worker-"


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cgroup_vm.VmRun]:
    if not FULL:
        pytest.skip("boots a VM: runs under make faults (BATCHD_FAULTS=full)")
    try:
        run = cgroup_vm.run_vm(tmp_path_factory.mktemp("cgroup-vm"))
    except cgroup_vm.Unavailable as exc:
        pytest.skip(str(exc))
    yield run


def scenario(vm: cgroup_vm.VmRun, name: str) -> dict[str, Any]:
    found: dict[str, Any] = vm.results.get(name, {})
    assert "exception" not in found, found.get("exception")
    return found


def daemon_choice(vm: cgroup_vm.VmRun) -> str:
    """What the daemon logged at start about worker memory limits."""
    for line in vm.files.get("journal.txt", "").splitlines():
        if '"worker memory limits"' in line:
            record = json.loads(line[line.index("{") :])
            return str(record.get("memory_limits"))
    return "not logged"


def test_worker_cgroup_memory_max(vm: cgroup_vm.VmRun, figures: dict[str, Any]) -> None:
    """13c. cgroup v2 (VM, Delegate=yes): each worker in its own group, memory.max = compute.mem
    The daemon moves itself to <service>/daemon; a worker (fresh, and the spare adopted by
    the next job) reads memory.max of its own group while it runs: compute.mem exactly;
    check-config inside a delegated unit says cgroup v2; no worker group is left at the end."""
    limit = scenario(vm, "limit")
    figures.update(
        accel=vm.accel,
        image_build_s=vm.image_built_s if vm.image_built_s is not None else "cached",
        boot_s=vm.marker("booted"),
        install_s=_between(vm, "booted", "installed"),
        service_start_s=_between(vm, "installed", "started"),
        vm_total_s=vm.seconds,
        unit_changes_for_test=", ".join(vm.unit_changes) or "none",
        daemon_says=daemon_choice(vm),
        daemon_cgroup=vm.results.get("daemon_cgroup"),
        mem=limit["mem"],
        memory_max=[run["memory_max"] for run in limit["runs"]],
        spare_adopted=[run["spare"] for run in limit["runs"]],
        job_s=[run["seconds"] for run in limit["runs"]],
        worker_groups_left=len(vm.results.get("worker_groups_left", [])),
        worker_groups_gone_s=vm.results.get("worker_groups_gone_s"),
    )
    assert daemon_choice(vm).startswith("cgroup v2 (delegated: "), vm.files.get("journal.txt")
    assert vm.results["daemon_cgroup"] == f"{SERVICE_GROUP}/daemon"
    for run in limit["runs"]:
        assert run["status"] == "succeeded", run
        assert run["memory_max"] == limit["mem"], run
        assert run["cgroup"].startswith(WORKER_GROUP_PREFIX), run
    # Both ways a worker starts were bounded: started for its job, and adopted spare.
    assert [run["spare"] for run in limit["runs"]].count(True) >= 1, limit["runs"]
    assert limit["runs"][0]["cgroup"] != limit["runs"][1]["cgroup"]
    delegated = vm.files.get("check-config-delegated.txt", "")
    assert "worker memory limits: cgroup v2 (delegated: /sys/fs/cgroup/" in delegated, delegated
    plain = vm.files.get("check-config-plain.txt", "")
    assert "worker memory limits: none (RLIMIT_AS in each worker): cgroup v2: " in plain, plain
    assert vm.results["worker_groups_left"] == []
    assert vm.results["daemon_active_at_end"] is True


def test_escaped_grandchild_is_killed_with_the_worker(
    vm: cgroup_vm.VmRun, figures: dict[str, Any]
) -> None:
    """13b. cgroup v2 (VM): a handler's setsid'd grandchild dies with its worker
    The grandchild is in a session of its own (out of the worker's process group, so the
    group guard cannot reach it) and in the worker's cgroup; once the job has ended and
    its worker with it, the grandchild is gone."""
    escape = scenario(vm, "escape")
    figures.update(
        escaped_process_group=escape["escaped_group"],
        in_worker_cgroup=escape["same_cgroup"],
        escapee_gone=escape["escapee_gone"],
        gone_after_job_s=escape["gone_after_s"],
        job_s=escape["seconds"],
    )
    assert escape["status"] == "succeeded", escape
    assert escape["escaped_group"] is True
    assert escape["same_cgroup"] is True
    assert escape["cgroup"].startswith(WORKER_GROUP_PREFIX)
    assert escape["escapee_gone"] is True, escape


def test_oom_in_the_worker_cgroup(vm: cgroup_vm.VmRun, figures: dict[str, Any]) -> None:
    """13a. cgroup v2 (VM): a batch allocating past compute.mem is OOM-killed in its group
    The job ends worker_oom, the batch's error names the OOM killer (told from the group's
    memory.events oom_kill, not a MemoryError: no RLIMIT_AS is set), the kernel logged a
    memory cgroup OOM, and the daemon lives on (same main PID, active, runs the next job)."""
    oom = scenario(vm, "oom")
    figures.update(
        job_status=oom["status"],
        error=oom["error"],
        kernel_memcg_ooms=oom["kernel_memcg_ooms"],
        daemon_pid_unchanged=oom["daemon_pid_unchanged"],
        next_job=oom["next_job"],
        job_s=oom["seconds"],
    )
    assert oom["status"] == "worker_oom", oom
    assert oom["error"] == OOM_ERROR, oom
    assert oom["kernel_memcg_ooms"] >= 1
    assert oom["daemon_pid_unchanged"] is True
    assert oom["daemon_active"] is True
    assert oom["next_job"] == "succeeded"


def _between(vm: cgroup_vm.VmRun, first: str, then: str) -> float | None:
    start, end = vm.marker(first), vm.marker(then)
    return None if start is None or end is None else round(end - start, 1)


def test_service_restart_rebuilds_the_tree(vm: cgroup_vm.VmRun, figures: dict[str, Any]) -> None:
    """13d. cgroup v2 (VM): systemctl restart batchd after the scenarios above
    systemd puts the new daemon into the service's group (the tree the old one built is
    gone with it), the new daemon moves into its leaf again, and its next worker is bounded."""
    restarted = scenario(vm, "restart")
    figures.update(
        restart_rc=restarted["restart_rc"],
        daemon_cgroup=restarted["daemon_cgroup"],
        memory_max=restarted["memory_max"],
        job_s=restarted["job_s"],
    )
    assert restarted["restart_rc"] == 0
    assert restarted["new_daemon"] is True
    assert restarted["daemon_cgroup"] == f"{SERVICE_GROUP}/daemon"
    assert restarted["status"] == "succeeded"
    assert restarted["memory_max"] == vm.results["limit"]["mem"]
