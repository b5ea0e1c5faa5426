"""Worker memory limits: which means is chosen, what check-config says, and the cgroup v2
mechanics this host's kernel can show without a VM (its memory controller is on v1; the
full v2 path runs in a VM under `make faults`, tests/faults/test_cgroup_v2.py)."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchd.constants import ENV_CGROUP, ENV_MEMORY_LIMIT
from batchd.pool import cgroups, memlimit
from tests.conftest import REPO, wait_for
from tests.faults import cgroup_vm

CONFIG = REPO / "config" / "batchd.toml"
NOBODY = 65534


def expected_mode() -> str:
    """The mode from first principles: /proc/self/mounts and /proc/self/cgroup."""
    mounts = [line.split() for line in Path("/proc/self/mounts").read_text().splitlines()]
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    own = {names: path for _, names, path in (line.split(":", 2) for line in lines)}
    v2_mount = next((Path(m[1]) for m in mounts if m[2] == "cgroup2"), None)
    if v2_mount is not None and "" in own:
        base = v2_mount / own[""].lstrip("/")
        controllers = (base / "cgroup.controllers").read_text().split()
        if "memory" in controllers and cgroups.delegated(base):
            return memlimit.MODE_V2
    v1 = next((path for names, path in own.items() if "memory" in names.split(",")), None)
    if v1 is not None and os.access(Path("/sys/fs/cgroup/memory") / v1.lstrip("/"), os.W_OK):
        return memlimit.MODE_V1
    return memlimit.MODE_NONE


def check_config(*prefix: str) -> str:
    done = subprocess.run(
        [*prefix, sys.executable, "-m", "batchd", "check-config", str(CONFIG)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("worker memory limits: ")]
    return line.removeprefix("worker memory limits: ")


def test_check_config_names_the_means_this_host_offers() -> None:
    said = check_config()
    mode = expected_mode()
    assert said.startswith(f"{mode} (" if mode != memlimit.MODE_NONE else "none (RLIMIT_AS")
    assert said == memlimit.choose().describe()
    if mode != memlimit.MODE_V2:
        # It says why cgroup v2 is not used, naming the group it looked at.
        v2 = cgroups.detect()
        assert v2.base is None
        assert v2.reason in said


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run check-config as nobody")
def test_check_config_as_an_unprivileged_user_falls_back_to_rlimit_with_reasons() -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    if expected_mode() == memlimit.MODE_V2:
        pytest.skip("this process sits in a delegated cgroup v2 group")
    said = check_config("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--")
    assert said.startswith("none (RLIMIT_AS in each worker): cgroup v2: ")
    # Both hierarchies are accounted for: v2 (not delegated or no memory controller), v1.
    assert "; cgroup v1: " in said
    v1_part = said.split("; cgroup v1: ", 1)[1]
    assert v1_part.endswith(f"is not writable by uid {NOBODY}") or v1_part == (
        "no memory controller mounted on v1"
    )


def test_the_rlimit_fallback_hands_the_bound_to_the_worker() -> None:
    limiter = memlimit.MemoryLimiter(choice=memlimit.Choice(memlimit.MODE_NONE, "test"))
    limiter.base = None
    assert not limiter.uses_cgroups
    assert limiter.prepare(64 << 20) is None
    assert limiter.env_for(64 << 20) == {ENV_MEMORY_LIMIT: str(64 << 20)}
    assert limiter.env_for(None) == {}
    assert limiter.oom_killed(None) is None


def test_a_cgroup_v2_group_is_handed_to_the_worker_instead_of_a_bound(tmp_path: Path) -> None:
    limiter = memlimit.MemoryLimiter(v2=cgroups.WorkerCgroups(tmp_path))
    group = tmp_path / "workers" / "worker-0"
    assert limiter.choice.mode == memlimit.MODE_V2
    assert limiter.env_for(64 << 20, group) == {ENV_CGROUP: str(group)}


# -- cgroup v2 mechanics on this host's unified hierarchy (no controllers needed) --------


@pytest.fixture
def v2_scratch() -> Iterator[Path]:
    """A group of our own under this process's cgroup v2 group."""
    mount = cgroups.v2_mount()
    own = cgroups.own_cgroup()
    if mount is None or own is None:
        pytest.skip("no cgroup v2 hierarchy here")
    scratch = mount / own.lstrip("/") / f"batchd-test-{secrets.token_hex(4)}"
    try:
        scratch.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot make a cgroup v2 group here: {exc}")
    try:
        yield scratch
    finally:
        for group in sorted(scratch.rglob("*"), reverse=True):
            if group.is_dir():
                cgroups.WorkerCgroups.kill(group)
                wait_for(lambda g=group: not cgroups.WorkerCgroups.populated(g), what="empty")
                group.rmdir()
        scratch.rmdir()


def test_removing_a_worker_group_kills_what_escaped_the_workers_process_group(
    v2_scratch: Path,
) -> None:
    group = v2_scratch / "worker-escape"
    group.mkdir()
    # A daemon a handler started with setsid: a session of its own, in the worker's group.
    escapee = subprocess.Popen(["sleep", "3600"], start_new_session=True)
    try:
        cgroups.WorkerCgroups.attach(group, escapee.pid)
        assert cgroups.WorkerCgroups.populated(group)
        assert os.getpgid(escapee.pid) != os.getpgrp()
        wait_for(lambda: cgroups.try_remove(group), timeout=30, what="group removed")
        assert escapee.wait(timeout=30) == -signal.SIGKILL
        assert not group.exists()
    finally:
        if escapee.poll() is None:
            escapee.kill()
            escapee.wait()


def test_a_worker_that_exits_takes_what_it_left_in_its_group(v2_scratch: Path) -> None:
    """The scheduler's steps when a worker has exited: kill_leftovers, then release."""
    limiter = memlimit.MemoryLimiter(v2=cgroups.WorkerCgroups(v2_scratch))
    group = v2_scratch / "worker-left"
    group.mkdir()
    left = subprocess.Popen(["sleep", "3600"], start_new_session=True)
    try:
        assert limiter.attach(left.pid, None, group) == group
        assert [int(pid) for pid in (group / "cgroup.procs").read_text().split()] == [left.pid]
        limiter.kill_leftovers(group)
        assert left.wait(timeout=30) == -signal.SIGKILL
        asyncio.run(limiter.release(group))
        assert not group.exists()
    finally:
        if left.poll() is None:
            left.kill()
            left.wait()


def test_stale_worker_groups_are_cleared_at_start(v2_scratch: Path) -> None:
    tree = cgroups.WorkerCgroups(v2_scratch)
    tree.workers.mkdir()
    stale = tree.workers / "worker-stale"
    stale.mkdir()
    left = subprocess.Popen(["sleep", "3600"], start_new_session=True)
    try:
        cgroups.WorkerCgroups.attach(stale, left.pid)
        assert tree.remove_now(stale)
        assert left.wait(timeout=30) == -signal.SIGKILL
        assert not stale.exists()
    finally:
        if left.poll() is None:
            left.kill()
            left.wait()


def test_detect_explains_a_group_without_the_memory_controller(v2_scratch: Path) -> None:
    mount = cgroups.v2_mount()
    assert mount is not None
    relative = "/" + str(v2_scratch.relative_to(mount))
    if "memory" in (v2_scratch / "cgroup.controllers").read_text().split():
        pytest.skip("the memory controller is available here")
    found = cgroups.detect(mount, relative)
    assert found.base is None
    assert found.reason.startswith(f"the memory controller is not available in {v2_scratch}")


def test_detect_looks_past_the_daemon_leaf_an_earlier_daemon_made(v2_scratch: Path) -> None:
    """A daemon started again from inside <base>/daemon still uses <base>."""
    mount = cgroups.v2_mount()
    assert mount is not None
    (v2_scratch / cgroups.DAEMON_LEAF).mkdir()
    (v2_scratch / cgroups.WORKERS).mkdir()
    leaf = "/" + str((v2_scratch / cgroups.DAEMON_LEAF).relative_to(mount))
    found = cgroups.detect(mount, leaf)
    assert f"in {v2_scratch} " in found.reason or found.reason.endswith(f"{v2_scratch}")
    assert f"{v2_scratch}/{cgroups.DAEMON_LEAF}" not in found.reason


def test_delegation_is_read_from_systemds_mark(v2_scratch: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("setting trusted.* xattrs needs root")
    assert not cgroups.delegated(v2_scratch)
    try:
        os.setxattr(v2_scratch, "trusted.delegate", b"1")
    except OSError as exc:
        pytest.skip(f"this kernel keeps no xattrs on cgroups: {exc}")
    assert cgroups.delegated(v2_scratch)


def test_unit_for_vm_adds_delegation_only_where_missing() -> None:
    """The VM's copy of the unit differs from the project's only where it must."""
    with_delegate, changes = cgroup_vm.unit_for_vm("[Service]\nDelegate=yes\nUser=batchd\n")
    assert (with_delegate, changes) == ("[Service]\nDelegate=yes\nUser=batchd\n", [])
    added, changes = cgroup_vm.unit_for_vm("[Unit]\n[Service]\nUser=batchd\n")
    assert added == "[Unit]\n[Service]\nDelegate=yes\nUser=batchd\n"
    assert changes == ["added Delegate=yes"]
    opened, changes = cgroup_vm.unit_for_vm("[Service]\nDelegate=yes\nProtectControlGroups=yes\n")
    assert opened == "[Service]\nDelegate=yes\nProtectControlGroups=no\n"
    assert changes == ["ProtectControlGroups=yes turned off"]
    assert Path(cgroup_vm.UNIT).exists()
