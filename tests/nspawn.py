"""A booted Debian 12 container (systemd-nspawn --boot) for driving the unit as an admin would.

The root file system is built once with debootstrap and cached outside the clone, keyed by
what goes into it; every container boots it read-only under a tmpfs overlay
(--volatile=overlay), so a test can never spoil the cache. The container runs in cgroups of its
own, made here, so that teardown can kill whatever it left behind, and it has no network but
loopback (--private-network). Commands run inside through nsenter: this needs neither machined
nor systemd on the host.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import wait_for

SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# What the admin's steps and the tests use inside: ps (procps) and setpriv (util-linux, in
# minbase) included.
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "python3",
    "python3-venv",
    "curl",
    "ca-certificates",
    "procps",
)
# Bumped when the way the root is made changes, so old caches are not reused.
ROOT_FORMAT = 1
CACHE_DIR = Path(os.environ.get("BATCHD_TEST_CACHE", "/var/cache/batchd-tests"))
# Under the test module's own timeout (720 s), which the first run's build counts against.
DEBOOTSTRAP_TIMEOUT = 540.0
BOOT_TIMEOUT = 60.0
HALT_TIMEOUT = 30.0
COMMAND_TIMEOUT = 120.0
CONTAINER_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# Machine names: the prefix, the test process's pid, and a random part.
NAME_PREFIX = "batchd-test-"
NSENTER_NAMESPACES = ("--mount", "--uts", "--ipc", "--net", "--pid", "--cgroup")


class Unavailable(Exception):
    """This machine cannot boot the container; the message says why."""


def unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "systemd-nspawn needs root"
    for tool in ("systemd-nspawn", "debootstrap", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} not found: run `make nspawn` as root (apt-get install it)"
    if not _cgroup_mounts():
        return "no writable cgroup hierarchy under /sys/fs/cgroup"
    return None


# --- the cached root ------------------------------------------------------------------------


def apt_mirror() -> str:
    """The host's Debian mirror (deb.debian.org here), from /etc/apt's sources."""
    sources = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    for path in sources:
        for stanza in path.read_text(errors="replace").split("\n\n"):
            fields = dict(
                line.split(":", 1)
                for line in stanza.splitlines()
                if ":" in line and not line.startswith("#")
            )
            suites = fields.get("Suites", "").split()
            uris = fields.get("URIs", "").split()
            if SUITE in suites and uris and uris[0].rstrip("/").endswith("/debian"):
                return uris[0].rstrip("/")
    listing = Path("/etc/apt/sources.list")
    if listing.exists():
        for line in listing.read_text(errors="replace").splitlines():
            match = re.match(rf"deb\s+(?:\[[^]]*\]\s+)?(\S+/debian)/?\s+{SUITE}\s", line)
            if match:
                return match.group(1)
    return DEFAULT_MIRROR


def root_key(mirror: str) -> str:
    recipe = json.dumps([ROOT_FORMAT, SUITE, mirror, "minbase", sorted(PACKAGES)])
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def cached_root(cache_dir: Path = CACHE_DIR) -> Path:
    """The root for this package list, built by debootstrap on first use (a minute or two)."""
    mirror = apt_mirror()
    root = cache_dir / f"{SUITE}-{root_key(mirror)}"
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Two test runs at once build it once: the second waits for the first.
    with (cache_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / "usr" / "lib" / "systemd" / "systemd").exists():
            return root
        building = cache_dir / f".building-{root.name}"
        shutil.rmtree(building, ignore_errors=True)
        log = cache_dir / f"{root.name}.debootstrap.log"
        command = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            str(building),
            mirror,
        ]
        with log.open("wb") as output:
            result = subprocess.run(
                command, stdout=output, stderr=subprocess.STDOUT, timeout=DEBOOTSTRAP_TIMEOUT
            )
        if result.returncode != 0:
            shutil.rmtree(building, ignore_errors=True)
            tail = log.read_text(errors="replace")[-1500:]
            raise Unavailable(f"debootstrap {SUITE} from {mirror} failed:\n{tail}")
        for package in (building / "var" / "cache" / "apt" / "archives").glob("*.deb"):
            package.unlink()
        building.rename(root)
        return root


# --- cgroups of our own ---------------------------------------------------------------------


def _cgroup_mounts() -> list[Path]:
    """Where this process's cgroups are: cgroup2, and systemd's named v1 hierarchy if any."""
    paths: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0":
            paths["cgroup2"] = path
        elif controllers == "name=systemd":
            paths["name=systemd"] = path
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        before, _, after = line.partition(" - ")
        mount_point = before.split()[4]
        fstype, _, options = after.split()[:3]
        kind = "cgroup2" if fstype == "cgroup2" else None
        if fstype == "cgroup" and "name=systemd" in options.split(","):
            kind = "name=systemd"
        if kind in paths and "ro" not in before.split()[5].split(","):
            found.append(Path(mount_point + paths.pop(kind).rstrip("/")))
    return found


def _cgroup_pids(cgroup: Path) -> list[int]:
    pids = []
    for procs in cgroup.rglob("cgroup.procs"):
        with contextlib.suppress(OSError):
            pids += [int(pid) for pid in procs.read_text().split()]
    return pids


def _remove_cgroup(cgroup: Path) -> bool:
    if not cgroup.exists():
        return True
    folders = sorted((p for p in cgroup.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
    for folder in [*folders, cgroup]:
        with contextlib.suppress(OSError):
            folder.rmdir()
    return not cgroup.exists()


def reap_stale_containers() -> None:
    """Kill and remove containers left by a test run that was itself killed (its pid, in the
    name, is gone): their teardown never ran."""
    for mount in _cgroup_mounts():
        for cgroup in mount.glob(f"{NAME_PREFIX}*"):
            owner = cgroup.name[len(NAME_PREFIX) :].split("-")[0]
            if owner.isdigit() and not Path(f"/proc/{owner}").exists():
                _kill_cgroup(cgroup)
                with contextlib.suppress(AssertionError):
                    wait_for(lambda c=cgroup: _remove_cgroup(c), HALT_TIMEOUT, f"removing {cgroup}")


def _kill_cgroup(cgroup: Path) -> None:
    kill_switch = cgroup / "cgroup.kill"
    if kill_switch.exists():
        with contextlib.suppress(OSError):
            kill_switch.write_text("1")
    for pid in _cgroup_pids(cgroup):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# --- the container --------------------------------------------------------------------------


@dataclass
class Container:
    root: Path
    workdir: Path
    binds: Sequence[tuple[Path, str]] = ()
    name: str = field(default_factory=lambda: f"{NAME_PREFIX}{os.getpid()}-{secrets.token_hex(3)}")
    process: subprocess.Popen[bytes] | None = None
    leader: int | None = None
    cgroups: list[Path] = field(default_factory=list)

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.console.log"

    def boot(self) -> None:
        reap_stale_containers()
        self.cgroups = [mount / self.name for mount in _cgroup_mounts()]
        for cgroup in self.cgroups:
            cgroup.mkdir()
        env = dict(os.environ)
        # The container gets a cgroup2-only tree even on a hybrid host (v1 controllers and
        # cgroup2 at /sys/fs/cgroup/unified): its units then use cgroup2 and BPF, as on
        # current distributions.
        env["SYSTEMD_NSPAWN_UNIFIED_HIERARCHY"] = "1"
        command = [
            "systemd-nspawn",
            "--boot",
            f"--directory={self.root}",
            "--volatile=overlay",
            f"--machine={self.name}",
            # No machined on the host to register with; the cgroups are ours (joined below).
            "--register=no",
            "--keep-unit",
            # Loopback only: the install must work with no network at all.
            "--private-network",
            "--console=pipe",
            *(f"--bind-ro={host}:{inside}" for host, inside in self.binds),
        ]
        cgroups = list(self.cgroups)

        def join_cgroups() -> None:
            for cgroup in cgroups:
                (cgroup / "cgroup.procs").write_text("0")

        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=join_cgroups,
            )
        self.leader = wait_for(self._find_leader, BOOT_TIMEOUT, "the container's init")
        wait_for(self._booted, BOOT_TIMEOUT, "systemctl is-system-running in the container")

    def _find_leader(self) -> int | None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"systemd-nspawn exited:\n{self.console()}")
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        for pid in children.read_text().split():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return int(pid)
        return None

    def _booted(self) -> bool:
        state = self.sh("systemctl is-system-running", check=False).stdout.strip()
        return state in ("running", "degraded")

    def sh(
        self, script: str, check: bool = True, timeout: float = COMMAND_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell script inside as root; check=True fails the test on a non-zero exit."""
        return self.run(["sh", "-ec", script], check=check, timeout=timeout)

    def run(
        self, argv: Sequence[str], check: bool = True, timeout: float = COMMAND_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        assert self.leader is not None, "boot() first"
        command = [
            "nsenter",
            f"--target={self.leader}",
            *NSENTER_NAMESPACES,
            "--root",
            "--wd",
            "env",
            "-i",
            f"PATH={CONTAINER_PATH}",
            "HOME=/root",
            "LANG=C.UTF-8",
            "SYSTEMD_PAGER=",
            "SYSTEMD_COLORS=0",
            *argv,
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited {result.returncode} in {self.name}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def console(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self) -> None:
        """Halt the container; kill whatever is left in its cgroups; remove them."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            # nspawn turns SIGTERM into an orderly halt of the container.
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(HALT_TIMEOUT)
        for cgroup in self.cgroups:
            _kill_cgroup(cgroup)
        if process is not None:
            process.wait(HALT_TIMEOUT)
        for cgroup in self.cgroups:
            wait_for(lambda c=cgroup: _remove_cgroup(c), HALT_TIMEOUT, f"removing {cgroup}")
        self.leader = None


@contextlib.contextmanager
def booted(
    root: Path, workdir: Path, binds: Sequence[tuple[Path, str]] = ()
) -> Iterator[Container]:
    container = Container(root=root, workdir=workdir, binds=binds)
    try:
        container.boot()
        yield container
    finally:
        container.terminate()
