"""A Debian bookworm VM (qemu) booted with cgroup v2, for the worker-cgroup scenarios.

This machine's kernel keeps the memory controller on cgroup v1, so the cgroup v2 path
(batchd/cgroups.py) is proven in a VM: the distribution's kernel, the real systemd,
batchd installed from the wheelhouse and run by the project's unit file.

The root image is built once with debootstrap (tests/faults/vm/build-image.sh) and
cached under /var/cache/batchd-tests, keyed by a hash of that script (which holds the
package list). Each run boots it with `-snapshot` (the image is never written) and a
9p share holding the wheelhouse, the unit, the config and the scenario script; the
VM writes results.json back into the share and powers off.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import REPO

VM_DIR = Path(__file__).resolve().parent / "vm"
BUILD_SCRIPT = VM_DIR / "build-image.sh"
CACHE = Path(os.environ.get("BATCHD_VM_CACHE", "/var/cache/batchd-tests"))
IMAGE_FILES = ("vmlinuz", "initrd.img", "root.img")
QEMU = "qemu-system-x86_64"
# debootstrap downloads and unpacks ~300 packages: minutes on a busy machine.
BUILD_TIMEOUT_S = 1800
WHEELHOUSE_TIMEOUT_S = 600
# TCG on 2 shared cores: about a minute to boot, a minute or two to install and run.
VM_TIMEOUT_S = 900
VM_MEMORY_MIB = 1536
VM_CPUS = 2
# Nested KVM is not dependable on every CI host (it hung on ours): TCG unless asked.
ACCEL = os.environ.get("BATCHD_VM_ACCEL", "tcg")
UNIT = REPO / "systemd" / "batchd.service"
DAEMON_CONFIG = """\
listen = "127.0.0.1:8780"
state_dir = "/var/lib/batchd"
token_file = "/run/credentials/batchd.service/token"
# One OOM kill ends the job worker_oom at once (no restarts).
max_worker_restarts = 0
"""


class Unavailable(Exception):
    """The VM cannot run here; the message says why (the tests skip with it)."""


@dataclass
class VmRun:
    results: dict[str, Any]
    serial: str
    seconds: float
    accel: str
    image_built_s: float | None
    unit_changes: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    def marker(self, name: str) -> float | None:
        """Uptime at a BATCHD-VM progress line (`booted`, `installed`, `started`, ...)."""
        match = re.search(rf"BATCHD-VM {name}\b.*?uptime=([0-9.]+)", self.serial)
        return float(match.group(1)) if match else None


def image_dir() -> Path:
    key = hashlib.sha256(BUILD_SCRIPT.read_bytes()).hexdigest()[:16]
    return CACHE / f"cgroupv2-vm-{key}"


def ensure_image() -> tuple[Path, float | None]:
    """The cached image, built first if missing; and how long that build took."""
    if shutil.which(QEMU) is None:
        raise Unavailable(f"{QEMU} is not installed (make vm-tools installs it)")
    target = image_dir()
    if all((target / name).exists() for name in IMAGE_FILES):
        return target, None
    if os.geteuid() != 0:
        raise Unavailable("building the VM image needs root (debootstrap)")
    if shutil.which("debootstrap") is None:
        raise Unavailable("debootstrap is not installed (make vm-tools installs it)")
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "cgroupv2-vm.lock", "w") as lock:
        # Another run may be building the same image: wait for it, then use its result.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if all((target / name).exists() for name in IMAGE_FILES):
            return target, None
        start = time.monotonic()
        build = subprocess.run(
            ["sh", str(BUILD_SCRIPT), str(target)],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
        )
        if build.returncode != 0:
            raise Unavailable(
                f"cannot build the VM image (no Debian mirror?): {build.stderr[-600:]}"
            )
        return target, round(time.monotonic() - start, 1)


def unit_for_vm(text: str) -> tuple[str, list[str]]:
    """The project's unit, and what had to change for it to delegate a cgroup (the
    figures list it): Delegate=yes where the unit does not say it yet, and no
    ProtectControlGroups=yes, which mounts /sys/fs/cgroup read-only for the service,
    its delegated group included (systemd 252)."""
    changes = []
    if not re.search(r"^Delegate=yes[ \t]*$", text, re.MULTILINE):
        text = text.replace("[Service]\n", "[Service]\nDelegate=yes\n", 1)
        changes.append("added Delegate=yes")
    protect = re.compile(r"^ProtectControlGroups=yes[ \t]*$", re.MULTILINE)
    if protect.search(text):
        text = protect.sub("ProtectControlGroups=no", text)
        changes.append("ProtectControlGroups=yes turned off")
    return text, changes


def prepare_share(share: Path) -> list[str]:
    share.mkdir(parents=True, exist_ok=True)
    make = subprocess.run(
        ["make", "-C", str(REPO), "wheelhouse", f"WHEELHOUSE={share / 'wheelhouse'}"],
        capture_output=True,
        text=True,
        timeout=WHEELHOUSE_TIMEOUT_S,
    )
    if make.returncode != 0:
        raise RuntimeError(f"make wheelhouse failed: {make.stderr[-2000:]}")
    unit, changes = unit_for_vm(UNIT.read_text())
    (share / "batchd.service").write_text(unit)
    (share / "batchd.toml").write_text(DAEMON_CONFIG)
    for name in ("boot.sh", "scenarios.py"):
        shutil.copy(VM_DIR / name, share / name)
    return changes


def qemu_command(image: Path, share: Path, serial: Path) -> list[str]:
    cpu = "host" if ACCEL == "kvm" else "max"
    return [
        QEMU,
        "-machine",
        f"q35,accel={ACCEL}",
        "-cpu",
        cpu,
        "-m",
        str(VM_MEMORY_MIB),
        "-smp",
        str(VM_CPUS),
        "-no-reboot",
        "-nographic",
        "-monitor",
        "none",
        "-serial",
        f"file:{serial}",
        "-kernel",
        str(image / "vmlinuz"),
        "-initrd",
        str(image / "initrd.img"),
        # cgroup v2 is bookworm's default; said anyway, since it is what is under test.
        "-append",
        "root=/dev/vda rw console=ttyS0 quiet panic=-1 systemd.unified_cgroup_hierarchy=1",
        "-drive",
        f"file={image / 'root.img'},if=virtio,format=raw,snapshot=on",
        "-virtfs",
        f"local,path={share},mount_tag=share,security_model=none,id=share",
    ]


def run_vm(work: Path) -> VmRun:
    image, built_s = ensure_image()
    share = work / "share"
    changes = prepare_share(share)
    serial = work / "serial.log"
    start = time.monotonic()
    vm = subprocess.run(
        qemu_command(image, share, serial),
        capture_output=True,
        text=True,
        timeout=VM_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    seconds = round(time.monotonic() - start, 1)
    serial_text = serial.read_text(errors="replace") if serial.exists() else ""
    if vm.returncode != 0:
        raise RuntimeError(f"qemu exited {vm.returncode}: {vm.stderr[-1000:]}")
    results_file = share / "results.json"
    if not results_file.exists():
        tail = "\n".join(serial_text.splitlines()[-40:])
        raise RuntimeError(f"the VM wrote no results; its console ended:\n{tail}")
    files = {
        name: (share / name).read_text(errors="replace")
        for name in (
            "journal.txt",
            "scenarios.log",
            "check-config-delegated.txt",
            "check-config-plain.txt",
        )
        if (share / name).exists()
    }
    return VmRun(
        results=json.loads(results_file.read_text()),
        serial=serial_text,
        seconds=seconds,
        accel=ACCEL,
        image_built_s=built_s,
        unit_changes=changes,
        files=files,
    )
