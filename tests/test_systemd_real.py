"""The shipped unit under real systemd: Debian 12 booted in a container, driven as an admin.

The install and deploy steps are docs/systemd.md's own code blocks ("Install from the wheelhouse"),
run verbatim inside, so those docs cannot drift from what works. The container's network is
off: batchd comes from the wheelhouse alone. Needs root and systemd-nspawn (`make nspawn`);
the first run builds the Debian root (debootstrap, a minute or two) into
/var/cache/batchd-tests, later runs reuse it.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import nspawn
from tests.conftest import REPO, wait_for

# Covers building the root on a fresh machine, which the first test's setup pays for.
pytestmark = pytest.mark.timeout(720)

SYSTEMD_DOC = REPO / "docs" / "systemd.md"
INSIDE = "/root/batchd"  # the admin's folder: the wheelhouse and the repository's files
URL = "http://127.0.0.1:8780"
UNIT_WATCHDOG = "30s"
TEST_WATCHDOG_SEC = 3
SLOW_BATCH_SECONDS = 0.4
SLOW_BATCHES = 16
JOB_TIMEOUT = 120.0
SERVICE_TIMEOUT = 60.0
MAX_EXPOSURE = 2.5
SLOW_HANDLER = f"""\
import time


class Handler:
    def __init__(self, config, job_spec):
        pass

    def handle_batch(self, payload, batch_id):
        time.sleep({SLOW_BATCH_SECONDS})
        return payload
"""


def readme_block(marker: str) -> str:
    """The ```sh block that follows `<!-- tests/test_systemd_real.py: MARKER -->`."""
    pattern = rf"<!-- tests/test_systemd_real\.py: {marker} -->\n```sh\n(.*?)```"
    match = re.search(pattern, SYSTEMD_DOC.read_text(), re.DOTALL)
    assert match, f"docs/systemd.md has no block marked {marker!r}"
    return match.group(1)


def json_values(text: str) -> list[Any]:
    """The JSON values printed one after another (curl adds no newline between them)."""
    decoder = json.JSONDecoder()
    values, index = [], 0
    while index < len(text.rstrip()):
        while text[index].isspace():
            index += 1
        value, index = decoder.raw_decode(text, index)
        values.append(value)
    return values


class Admin:
    """Root's shell in the container, with the daemon's token for curl."""

    def __init__(self, container: nspawn.Container) -> None:
        self.container = container

    def sh(self, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.container.sh(f"cd {INSIDE}\n{script}", check=check)

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = "" if body is None else f"-d {shlex.quote(json.dumps(body))}"
        output = self.sh(
            f'curl -sS --fail-with-body -X {method} -H "Authorization: Bearer '
            f'$(cat /etc/batchd/token)" {data} {shlex.quote(URL + path)}'
        ).stdout
        return output

    def json(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return json.loads(self.api(method, path, body))

    def show(self, *properties: str) -> dict[str, str]:
        flags = " ".join(f"-p {name}" for name in properties)
        output = self.sh(f"systemctl show batchd {flags}").stdout
        return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)

    def job(self, api: str, job_id: str) -> dict[str, Any]:
        status: dict[str, Any] = self.json("GET", f"/batch/{api}?jobID={job_id}")["job_status"]
        return status

    def results(self, api: str, job_id: str) -> list[dict[str, Any]]:
        text = self.api("GET", f"/batch/{api}/results?jobID={job_id}")
        return [json.loads(line) for line in text.splitlines() if line]

    def journal(self, since_cursor: str | None = None) -> list[dict[str, Any]]:
        after = f"--after-cursor={shlex.quote(since_cursor)}" if since_cursor else ""
        output = self.sh(f"journalctl -u batchd -o json --no-pager {after}").stdout
        return [json.loads(line) for line in output.splitlines() if line]

    def cursor(self) -> str:
        entries = self.journal()
        return str(entries[-1]["__CURSOR"]) if entries else ""

    def messages(self, since_cursor: str | None = None) -> list[str]:
        return [str(entry.get("MESSAGE", "")) for entry in self.journal(since_cursor)]

    def wait_active(self, other_than_pid: str | None = None) -> str:
        """The MainPID of an active service (a new one when `other_than_pid` is given)."""

        def active() -> str | None:
            state = self.show("ActiveState", "SubState", "MainPID")
            if (state["ActiveState"], state["SubState"]) != ("active", "running"):
                return None
            if state["MainPID"] in ("0", other_than_pid):
                return None
            return state["MainPID"]

        pid: str = wait_for(active, SERVICE_TIMEOUT, "batchd active (running)")
        return pid

    def wait_job(self, api: str, job_id: str) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            status = self.job(api, job_id)
            return None if status["status"] in ("pending", "running") else status

        status: dict[str, Any] = wait_for(finished, JOB_TIMEOUT, f"job {job_id} to end")
        return status

    def wait_in_flight(self, api: str, job_id: str) -> None:
        """Until some batches succeeded and some are running: the middle of the job."""

        def in_flight() -> bool:
            metrics = self.job(api, job_id)["batch_metrics"]
            return bool(metrics["succeeded"] >= 2 and metrics["in_progress"] >= 1)

        wait_for(in_flight, JOB_TIMEOUT, f"job {job_id} half done")

    def submit_slow(self) -> str:
        items = list(range(SLOW_BATCHES))
        body = {"workers": 2, "item_list": {"items": items, "batch_size": 1}}
        job_id: str = self.json("POST", "/batch/slow", body)["job_id"]
        return job_id

    def assert_every_batch_once(self, job_id: str) -> dict[str, Any]:
        status = self.wait_job("slow", job_id)
        assert status["status"] == "succeeded", status
        metrics = status["batch_metrics"]
        assert (metrics["succeeded"], metrics["failed"]) == (SLOW_BATCHES, 0), metrics
        results = self.results("slow", job_id)
        assert len(results) == SLOW_BATCHES
        assert len({row["batch_id"] for row in results}) == SLOW_BATCHES
        assert sorted(item for row in results for item in row["result"]) == list(
            range(SLOW_BATCHES)
        )
        return status


@pytest.fixture(scope="module")
def debian_root() -> Path:
    reason = nspawn.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    try:
        return nspawn.cached_root()
    except nspawn.Unavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def admin_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What an admin copies to the box: the wheelhouse and the repository's files."""
    folder = tmp_path_factory.mktemp("admin")
    # Built from this checkout every time: a dist/wheelhouse left from an older checkout
    # would test old code.
    subprocess.run(
        ["make", "-C", str(REPO), "wheelhouse", f"WHEELHOUSE={folder / 'wheelhouse'}"],
        check=True,
        capture_output=True,
        timeout=540,
    )
    for part in ("systemd", "config", "examples/hello"):
        shutil.copytree(REPO / part, folder / part)
    slow = folder / "examples" / "slow"
    slow.mkdir()
    (slow / "handler.py").write_text(SLOW_HANDLER)
    (slow / "batchd.toml").write_text('name = "slow"\n[handler]\npath = "handler.py"\n')
    return folder


@pytest.fixture(scope="module")
def container(
    debian_root: Path, admin_folder: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[nspawn.Container]:
    workdir = tmp_path_factory.mktemp("nspawn")
    with nspawn.booted(debian_root, workdir, binds=[(admin_folder, INSIDE)]) as booted:
        yield booted


@pytest.fixture(scope="module")
def install_output(container: nspawn.Container) -> str:
    # /healthz straight after `systemctl enable --now` returns, with no wait: Type=notify
    # makes start return only once the daemon said READY=1.
    script = readme_block("install") + f"curl -sS --fail-with-body {URL}/healthz\n"
    return Admin(container).sh(script).stdout


@pytest.fixture
def admin(container: nspawn.Container, install_output: str) -> Admin:
    admin = Admin(container)
    admin.sh("systemctl start batchd")
    admin.wait_active()
    return admin


@pytest.fixture(scope="module")
def hello_job(container: nspawn.Container, install_output: str) -> dict[str, Any]:
    admin = Admin(container)
    admin.sh("systemctl start batchd")
    deployed, submitted = json_values(admin.sh(readme_block("deploy")).stdout)
    assert (deployed["name"], deployed["version"]) == ("hello", 1)
    slow = admin.sh(
        'tar -C examples/slow -czf - . | curl -sS --fail-with-body -H "Authorization: Bearer '
        "$(cat /etc/batchd/token)\" -H 'Content-Type: application/gzip' --data-binary @- "
        f"{URL}/apis"
    ).stdout
    assert json.loads(slow)["name"] == "slow"
    job: dict[str, Any] = submitted
    return job


def test_start_returns_once_ready_and_the_token_comes_from_the_credential(
    install_output: str, container: nspawn.Container
) -> None:
    assert json.loads(install_output.splitlines()[-1]) == {"status": "ok"}
    admin = Admin(container)
    # The install above had no network: loopback is the only interface.
    assert admin.sh("ls /sys/class/net").stdout.split() == ["lo"]
    state = admin.show("ActiveState", "Type", "NotifyAccess", "UnitFileState")
    assert state == {
        "ActiveState": "active",
        "Type": "notify",
        "NotifyAccess": "main",
        "UnitFileState": "enabled",
    }
    # LoadCredential= copied root's 0600 file for the service; the daemon requires it.
    same = admin.sh(
        "cmp /etc/batchd/token /run/credentials/batchd.service/token && echo same"
    ).stdout
    assert same.strip() == "same"
    denied = admin.sh(f"curl -s -o /dev/null -w '%{{http_code}}' {URL}/apis").stdout
    assert denied == "401"
    assert "apis" in admin.json("GET", "/apis")


def test_job_runs_as_batchd_with_state_in_the_state_directory(
    admin: Admin, hello_job: dict[str, Any]
) -> None:
    status = admin.wait_job("hello", hello_job["job_id"])
    assert status["status"] == "succeeded", status
    results = admin.results("hello", hello_job["job_id"])
    assert sorted(item for row in results for item in row["result"]) == [
        "hello one!",
        "hello three!",
        "hello two!",
        "hello zero!",
    ]
    job_id = admin.submit_slow()
    admin.wait_in_flight("slow", job_id)
    main_pid = admin.show("MainPID")["MainPID"]
    processes = admin.sh("ps -eo user:20=,cgroup:60=,args=").stdout.splitlines()
    workers = [line.split() for line in processes if "-m batchd.worker" in line]
    assert workers, processes
    # In the service's group, or in a worker group of its own where cgroup v2 has the
    # memory controller (not on a hybrid host like this one).
    service = "0::/system.slice/batchd.service"
    assert {worker[0] for worker in workers} == {"batchd"}
    assert all(
        worker[1] == service or worker[1].startswith(f"{service}/workers/") for worker in workers
    ), workers
    daemon = admin.sh(f"ps -o user= -p {main_pid}").stdout.strip()
    assert daemon == "batchd"
    owner_mode = admin.sh("stat -c '%U %G %a' /var/lib/batchd").stdout.strip()
    assert owner_mode == "batchd batchd 700"
    database = admin.sh("stat -c '%U %s' /var/lib/batchd/batchd.sqlite3").stdout.split()
    assert database[0] == "batchd" and int(database[1]) > 0
    admin.assert_every_batch_once(job_id)


def test_journal_keeps_the_json_records(admin: Admin, hello_job: dict[str, Any]) -> None:
    main_pid = admin.show("MainPID")["MainPID"]
    records = [
        (entry, json.loads(entry["MESSAGE"]))
        for entry in admin.journal()
        if entry.get("_PID") == main_pid and entry.get("SYSLOG_IDENTIFIER") == "batchd"
    ]
    assert records
    for entry, record in records:
        assert {"asctime", "levelname", "logger", "message", "process"} <= set(record), record
        assert str(record["process"]) == entry["_PID"]
        assert entry["_SYSTEMD_UNIT"] == "batchd.service"
    ready = [record for _, record in records if record["message"] == "batchd ready"]
    assert ready and ready[-1]["state_dir"] == "/var/lib/batchd"


def test_stop_drains_and_start_finishes_the_job(admin: Admin, hello_job: dict[str, Any]) -> None:
    job_id = admin.submit_slow()
    admin.wait_in_flight("slow", job_id)
    cursor = admin.cursor()
    admin.sh("systemctl stop batchd")
    state = admin.show("ActiveState", "Result")
    # Result=success: the daemon drained and exited within TimeoutStopSec, not killed.
    assert state == {"ActiveState": "inactive", "Result": "success"}
    messages = admin.messages(cursor)
    assert any('"message": "stopping: draining workers"' in m for m in messages), messages
    assert any('"message": "batchd stopped"' in m for m in messages), messages
    admin.sh("systemctl start batchd")
    status = admin.assert_every_batch_once(job_id)
    # Cut off by the operator, not by the batch: a released batch is charged nothing.
    assert status["batch_metrics"]["failed_attempts"] == 0


def test_kill_9_then_start_loses_nothing(admin: Admin, hello_job: dict[str, Any]) -> None:
    job_id = admin.submit_slow()
    admin.wait_in_flight("slow", job_id)
    before = admin.show("MainPID")["MainPID"]
    admin.sh("systemctl kill -s KILL batchd")
    wait_for(
        lambda: admin.show("MainPID")["MainPID"] != before, SERVICE_TIMEOUT, "the daemon to die"
    )
    admin.sh("systemctl start batchd")
    admin.wait_active(other_than_pid=before)
    admin.assert_every_batch_once(job_id)


def test_watchdog_restarts_a_stopped_daemon(admin: Admin) -> None:
    assert admin.show("WatchdogUSec")["WatchdogUSec"] == UNIT_WATCHDOG
    dropin = "/etc/systemd/system/batchd.service.d/watchdog.conf"
    # The unit's 30 s made shorter, as an admin's drop-in would, to keep the test short.
    admin.sh(
        f"mkdir -p {Path(dropin).parent}\n"
        f"printf '[Service]\\nWatchdogSec={TEST_WATCHDOG_SEC}\\n' > {dropin}\n"
        "systemctl daemon-reload && systemctl restart batchd"
    )
    try:
        state = admin.show("MainPID", "NRestarts", "WatchdogTimestampMonotonic")
        assert admin.show("WatchdogUSec")["WatchdogUSec"] == f"{TEST_WATCHDOG_SEC}s"
        # The daemon pings: the last ping's time moves on, twice, for the same process (a
        # daemon that never pinged would be restarted instead, and its time reset).
        pings = {state["WatchdogTimestampMonotonic"]}

        def pinged_twice() -> bool:
            now = admin.show("MainPID", "NRestarts", "WatchdogTimestampMonotonic")
            assert (now["MainPID"], now["NRestarts"]) == (state["MainPID"], state["NRestarts"])
            pings.add(now["WatchdogTimestampMonotonic"])
            return len(pings) >= 3

        wait_for(pinged_twice, SERVICE_TIMEOUT, "two watchdog pings")
        cursor = admin.cursor()
        admin.sh(f"kill -STOP {state['MainPID']}")
        wait_for(
            lambda: admin.show("NRestarts")["NRestarts"] == str(int(state["NRestarts"]) + 1),
            SERVICE_TIMEOUT,
            "the watchdog's restart",
        )
        admin.wait_active(other_than_pid=state["MainPID"])
        messages = admin.messages(cursor)
        assert any("Watchdog timeout" in m for m in messages), messages
    finally:
        admin.sh(f"rm -f {dropin}\nsystemctl daemon-reload && systemctl restart batchd")


def test_delegate_gives_the_daemon_its_cgroup(admin: Admin) -> None:
    state = admin.show("Delegate", "ControlGroup", "MainPID")
    assert state["Delegate"] == "yes"
    cgroup = f"/sys/fs/cgroup{state['ControlGroup']}"
    assert admin.sh(f"stat -c %U {cgroup}").stdout.strip() == "batchd"
    # In the daemon's own mount namespace (the unit's sandbox), as its user, as the daemon
    # would make a cgroup per worker.
    probe = f"{cgroup}/probe"
    made = admin.sh(
        f"nsenter --target={state['MainPID']} --mount --wd=/ "
        f"setpriv --reuid=batchd --regid=batchd --clear-groups "
        f"sh -c 'mkdir {probe} && rmdir {probe} && echo made'",
        check=False,
    )
    assert made.stdout.strip() == "made", made.stderr


def test_security_exposure_measured_inside(admin: Admin) -> None:
    output = admin.sh("systemd-analyze security batchd --no-pager").stdout
    match = re.search(r"Overall exposure level for batchd\.service: ([0-9.]+) (\w+)", output)
    assert match, output
    version = admin.sh("systemctl --version").stdout.splitlines()[0]
    figure = float(match.group(1))
    sys.stdout.write(
        textwrap.dedent(
            f"""
            systemd-analyze security batchd (running, {version}): {figure} {match.group(2)}
            """
        )
    )
    assert figure <= MAX_EXPOSURE, output
