"""requirements.txt: each API's venv, built at deploy with real pip from a wheelhouse the
tests make themselves (no package index: [deploy] no_index), shared by key across the
session so that one set of requirements is built once per test run."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import os
import pty
import secrets
import subprocess
import sys
import time
import urllib.parse
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from batchd.apis.spec import HandlerSpec
from batchd.apis.venvs import (
    CORTEX_PACKAGES,
    READY_FILE,
    REQUIREMENTS_FIELD,
    USERS_DIR,
    VenvStore,
    requirements_of,
)
from batchd.client import BatchdError, Client
from batchd.config import DeploySettings
from batchd.errors import Invalid
from batchd.packing import pack_project
from testkit.launcher import Daemon
from tests import pg
from tests.conftest import wait_job

pytestmark = pytest.mark.timeout(300)

# Reports where it runs: the interpreter's prefix and the module the venv installed.
HANDLER = """
import subprocess
import sys

import tinypkg


class Handler:
    def __init__(self, config, job_spec):
        pass

    def handle_batch(self, payload, batch_id):
        return {"value": tinypkg.VALUE, "prefix": sys.prefix, "module": tinypkg.__file__}
"""


def _wheel(folder: Path, name: str, version: str, source: str) -> None:
    """A pure-Python wheel of one module, as a build backend would write it."""
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": source,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as wheel:
        for path, text in files.items():
            wheel.writestr(path, text)


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("wheelhouse")
    _wheel(folder, "tinypkg", "1.0", "VALUE = 1\n")
    _wheel(folder, "tinypkg", "2.0", "VALUE = 2\n")
    # Stands in for the real boto3 that a Cortex project's venv gets from an index; a
    # version above any real one, should this machine's pip configuration find one too.
    _wheel(folder, "boto3", "9999.0", "STAND_IN = True\n")
    return folder


@pytest.fixture(scope="session")
def venv_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("venvs")


@pytest.fixture
def offline(wheelhouse: Path, venv_dir: Path) -> dict[str, Any]:
    """make_daemon settings: install from the wheelhouse only, into the session's venvs."""
    return {
        "deploy": {"find_links": [str(wheelhouse)], "no_index": True, "venv_dir": str(venv_dir)}
    }


def _project(
    make_project: Callable[..., Path], name: str, requirements: str | None, extra_toml: str = ""
) -> Path:
    files = {} if requirements is None else {"requirements.txt": requirements}
    return make_project(name, HANDLER, files=files, extra_toml=extra_toml)


def _run(client: Client, api: str) -> dict[str, Any]:
    job = client.submit(api, {"item_list": {"items": [1], "batch_size": 1}})
    assert wait_job(client, api, job["job_id"])["status"] == "succeeded"
    (record,) = client.results(api, job["job_id"])
    result: dict[str, Any] = record["result"]
    return result


def _venvs(venv_dir: Path) -> set[str]:
    return {path.name for path in venv_dir.iterdir() if not path.name.startswith(".")}


def _built(venv_dir: Path, key: str) -> tuple[int, int]:
    """The ready mark's inode and mtime: they change when the venv is built again."""
    stat = (venv_dir / key / READY_FILE).stat()
    return stat.st_ino, stat.st_mtime_ns


def _key_of(venv_dir: Path, before: set[str]) -> str:
    (key,) = _venvs(venv_dir) - before
    return key


def test_requirements_install_offline_and_the_handler_runs_in_the_venv(
    make_daemon: Callable[..., Daemon],
    make_project: Callable[..., Path],
    offline: dict[str, Any],
    venv_dir: Path,
) -> None:
    daemon = make_daemon(**offline)
    # Requirements no other test has: this deploy builds their venv, whatever ran first.
    requirements = f"# {secrets.token_hex(8)}\ntinypkg==1.0\n"
    before = _venvs(venv_dir)
    lines: list[str] = []
    api = daemon.client.deploy(_project(make_project, "first", requirements), progress=lines.append)
    assert api["version"] == 1 and api["warnings"] == []
    key = _key_of(venv_dir, before)
    assert any(line.startswith("Installing collected packages: tinypkg") for line in lines), lines
    assert "Successfully installed tinypkg-1.0" in lines
    result = _run(daemon.client, "first")
    assert result["value"] == 1
    assert Path(result["prefix"]) == venv_dir / key
    assert Path(result["module"]).is_relative_to(venv_dir / key)
    assert "tinypkg-1.0" in (venv_dir / key / "pip.log").read_text()
    built = _built(venv_dir, key)

    # Another API with the same requirements shares the venv: nothing is built.
    lines.clear()
    daemon.client.deploy(_project(make_project, "second", requirements), progress=lines.append)
    assert not any("Installing" in line for line in lines), lines
    assert Path(_run(daemon.client, "second")["prefix"]) == venv_dir / key
    # So does a new version whose requirements did not change (a plain POST, as curl's).
    project = _project(make_project, "first", requirements)
    (project / "notes.txt").write_text("a change that is not a requirement")
    assert daemon.client.deploy(project)["version"] == 2
    assert _venvs(venv_dir) - before == {key}
    assert _built(venv_dir, key) == built
    assert Path(_run(daemon.client, "first")["prefix"]) == venv_dir / key

    # A changed requirement is a new venv; the old one stays for the other API.
    changed = requirements.replace("tinypkg==1.0", "tinypkg==2.0")
    assert daemon.client.deploy(_project(make_project, "first", changed))["version"] == 3
    (new_key,) = _venvs(venv_dir) - before - {key}
    result = _run(daemon.client, "first")
    assert result["value"] == 2 and Path(result["prefix"]) == venv_dir / new_key
    assert _built(venv_dir, key) == built

    # The daemon restarted keeps using what it built.
    daemon.restart()
    assert Path(_run(daemon.client, "second")["prefix"]) == venv_dir / key
    assert _built(venv_dir, key) == built


def test_a_failing_requirement_is_a_422_with_pips_error_and_no_version(
    make_daemon: Callable[..., Daemon],
    make_project: Callable[..., Path],
    offline: dict[str, Any],
    venv_dir: Path,
) -> None:
    daemon = make_daemon(**offline)
    before = _venvs(venv_dir)
    failed_before = set((venv_dir / ".failed").glob("*.log"))
    project = _project(make_project, "broken", "tinypkg==1.0\nno-such-package-c14==1.0\n")
    with pytest.raises(BatchdError) as caught:
        daemon.client.deploy(project)
    assert caught.value.status == 422
    assert caught.value.field == "requirements.txt"
    assert "No matching distribution found for no-such-package-c14==1.0" in caught.value.message
    assert daemon.client.list_apis() == []
    # No half venv is left that could look ready; pip's log is kept.
    assert _venvs(venv_dir) == before
    (log,) = set((venv_dir / ".failed").glob("*.log")) - failed_before
    assert "no-such-package-c14" in log.read_text()
    assert str(log) in caught.value.message

    # The same through the progress answer: the outcome's status and error, and pip's lines.
    lines: list[str] = []
    with pytest.raises(BatchdError) as streamed:
        daemon.client.deploy(project, progress=lines.append)
    assert (streamed.value.status, streamed.value.field) == (422, "requirements.txt")
    assert any("no-such-package-c14" in line for line in lines), lines

    # A requirements file the spec names but the project lacks.
    named = _project(make_project, "named", None)
    (named / "batchd.toml").write_text(
        'name = "named"\n[handler]\npath = "handler.py"\nrequirements = "deps.txt"\n'
    )
    with pytest.raises(BatchdError) as missing:
        daemon.client.deploy(named)
    assert (missing.value.status, missing.value.field) == (422, REQUIREMENTS_FIELD)
    assert "deps.txt" in missing.value.message


def test_handler_python_wins_and_the_answer_warns(
    make_daemon: Callable[..., Daemon],
    make_project: Callable[..., Path],
    offline: dict[str, Any],
    venv_dir: Path,
) -> None:
    daemon = make_daemon(**offline)
    before = _venvs(venv_dir)
    # This interpreter imports tinypkg from the project folder, not from any venv.
    project = make_project(
        "own",
        HANDLER,
        files={"requirements.txt": "no-such-package-c14\n", "tinypkg/__init__.py": "VALUE = 7\n"},
    )
    (project / "batchd.toml").write_text(
        f'name = "own"\n[handler]\npath = "handler.py"\npython = {json.dumps(sys.executable)}\n'
    )
    api = daemon.client.deploy(project)
    (warning,) = api["warnings"]
    assert "requirements.txt was not installed" in warning and "[handler] python" in warning
    assert _venvs(venv_dir) == before
    result = _run(daemon.client, "own")
    assert result["value"] == 7 and result["prefix"] == sys.prefix


def test_pip_runs_with_the_daemons_own_configuration(
    make_daemon: Callable[..., Daemon],
    make_project: Callable[..., Path],
    wheelhouse: Path,
    venv_dir: Path,
) -> None:
    # A site's mirror, set for pip and not in [deploy]: the daemon's pip finds it.
    daemon = make_daemon(start=False, deploy={"venv_dir": str(venv_dir)})
    daemon.env = {"PIP_FIND_LINKS": str(wheelhouse), "PIP_NO_INDEX": "1"}
    daemon.start()
    before = _venvs(venv_dir)
    lines: list[str] = []
    project = _project(make_project, "mirror", f"# {secrets.token_hex(8)}\ntinypkg==2.0\n")
    daemon.client.deploy(project, progress=lines.append)
    assert "Successfully installed tinypkg-2.0" in lines
    key = _key_of(venv_dir, before)
    result = _run(daemon.client, "mirror")
    assert result["value"] == 2 and Path(result["prefix"]) == venv_dir / key


def test_a_cortex_project_gets_boto3_without_listing_it(
    make_daemon: Callable[..., Daemon], make_project: Callable[..., Path], offline: dict[str, Any]
) -> None:
    daemon = make_daemon(**offline)
    handler = HANDLER.replace("import tinypkg", "import boto3 as tinypkg").replace(
        "tinypkg.VALUE", "tinypkg.STAND_IN"
    )
    project = make_project("cortex", handler)
    (project / "batchd.toml").write_text(
        'name = "cortex"\n[handler]\npath = "handler.py"\ncortex_modules = true\n'
    )
    daemon.client.deploy(project)
    result = _run(daemon.client, "cortex")
    assert result["value"] is True
    assert Path(result["module"]).is_relative_to(result["prefix"])
    assert result["prefix"] != sys.prefix


def test_a_venv_goes_with_the_last_api_that_uses_it(
    make_daemon: Callable[..., Daemon],
    make_project: Callable[..., Path],
    offline: dict[str, Any],
    venv_dir: Path,
) -> None:
    daemon = make_daemon(**offline)
    requirements = f"# {secrets.token_hex(8)}\ntinypkg==1.0\n"
    before = _venvs(venv_dir)
    daemon.client.deploy(_project(make_project, "one", requirements))
    key = _key_of(venv_dir, before)
    daemon.client.deploy(_project(make_project, "two", requirements))
    daemon.client.delete("one")
    assert key in _venvs(venv_dir)
    assert Path(_run(daemon.client, "two")["prefix"]) == venv_dir / key
    daemon.client.delete("two")
    assert key not in _venvs(venv_dir)


def test_batchd_deploy_shows_pips_lines_on_a_terminal(
    make_daemon: Callable[..., Daemon], make_project: Callable[..., Path], offline: dict[str, Any]
) -> None:
    daemon = make_daemon(**offline)
    project = _project(make_project, "shown", f"# {secrets.token_hex(8)}\ntinypkg==1.0\n")
    terminal, stderr = pty.openpty()
    command = [sys.executable, "-m", "batchd", "deploy", str(project), "--url", daemon.url]
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr
    )
    os.close(stderr)
    shown = b""
    with contextlib.suppress(OSError):  # EIO: the CLI has exited and closed the terminal
        while chunk := os.read(terminal, 4096):
            shown += chunk
    os.close(terminal)
    assert process.communicate(timeout=120)[0] == b"deployed shown version 1 (2 files)\n"
    lines = shown.decode().splitlines()
    assert "  creating a venv for requirements.txt" in lines
    assert "  Successfully installed tinypkg-1.0" in lines
    assert lines[-1] == "  the venv is ready"


def test_a_client_gone_mid_progress_leaves_the_deploy_to_finish(
    make_daemon: Callable[..., Daemon], make_project: Callable[..., Path], offline: dict[str, Any]
) -> None:
    daemon = make_daemon(**offline)
    project = _project(make_project, "orphaned", f"# {secrets.token_hex(8)}\ntinypkg==1.0\n")
    archive = pack_project(project)
    url = urllib.parse.urlsplit(daemon.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    connection.request(
        "POST",
        "/apis",
        body=archive,
        headers={"Content-Type": "application/gzip", "Accept": "application/x-ndjson"},
    )
    response = connection.getresponse()
    assert response.status == 200
    assert json.loads(response.readline()) == {"progress": "creating a venv for requirements.txt"}
    # Gone while pip runs: the build is not cut short, and the version is recorded.
    connection.close()
    deadline = time.monotonic() + 120
    while True:
        with contextlib.suppress(BatchdError):
            api = daemon.client.get_api("orphaned")
            break
        assert time.monotonic() < deadline, "the deploy did not finish without its client"
        time.sleep(0.2)
    assert api["version"] == 1
    assert _run(daemon.client, "orphaned")["value"] == 1


# -- without a daemon ----------------------------------------------------------------------


def _handler(**fields: Any) -> HandlerSpec:
    return HandlerSpec.model_validate({"path": "handler.py", **fields})


def test_the_key_is_the_requirements_and_the_packages(tmp_path: Path) -> None:
    assert requirements_of(tmp_path, _handler()) is None
    cortex = requirements_of(tmp_path, _handler(cortex_modules=True))
    assert cortex is not None and cortex.packages == CORTEX_PACKAGES and cortex.file is None
    (tmp_path / "requirements.txt").write_text("tinypkg==1.0\n")
    plain = requirements_of(tmp_path, _handler())
    assert plain is not None and plain.field == "requirements.txt"
    with_boto3 = requirements_of(tmp_path, _handler(cortex_modules=True))
    assert with_boto3 is not None
    (tmp_path / "requirements.txt").write_text("tinypkg==2.0\n")
    changed = requirements_of(tmp_path, _handler())
    assert changed is not None
    keys = {plain.key(), with_boto3.key(), changed.key(), cortex.key()}
    assert len(keys) == 4
    (tmp_path / "deps.txt").write_text("tinypkg==2.0\n")
    named = requirements_of(tmp_path, _handler(requirements="deps.txt"))
    assert named is not None and named.key() == changed.key()
    assert named.field == REQUIREMENTS_FIELD
    with pytest.raises(Invalid):
        requirements_of(tmp_path, _handler(requirements="other.txt"))


def test_the_sweep_keeps_what_a_live_state_dir_uses(tmp_path: Path) -> None:
    root = tmp_path / "venvs"
    mine = VenvStore(root, DeploySettings(), tmp_path / "mine")
    (tmp_path / "mine").mkdir()
    (tmp_path / "theirs").mkdir()
    for key in ("used", "shared", "unused", "crashed", "gone-user"):
        (root / key).mkdir(parents=True)
        if key != "crashed":
            (root / key / READY_FILE).write_text("{}")
    for key, user in (("shared", "theirs"), ("gone-user", "deleted-state")):
        (root / key / USERS_DIR).mkdir()
        (root / key / USERS_DIR / user).write_text(str(tmp_path / user))
    removed = mine.sweep({"used"})
    assert sorted(removed) == ["crashed", "gone-user", "unused"]
    assert _venvs(root) == {"used", "shared"}
    assert (root / "used" / USERS_DIR).is_dir()
    # A deploy that began to use it after `in_use` was read: kept, and still marked.
    assert mine.sweep(set(), deploying=lambda: ["used"]) == []
    assert len(os.listdir(root / "used" / USERS_DIR)) == 1
    assert mine.sweep(set()) == ["used"]
    assert os.listdir(root / "shared" / USERS_DIR) == ["theirs"]


def test_another_node_builds_the_venv_before_its_first_worker(
    make_daemon: Callable[..., Daemon],
    make_project: Callable[..., Path],
    offline: dict[str, Any],
    wheelhouse: Path,
    venv_dir: Path,
    postgres_cluster: pg.Cluster,
    tmp_path: Path,
) -> None:
    def node(name: str, wheels: Path) -> Daemon:
        deploy = {"find_links": [str(wheels)], "no_index": True, "venv_dir": str(tmp_path / name)}
        return make_daemon(database=dsn, node_name=name, deploy=deploy)

    with postgres_cluster.fresh_schema() as dsn:
        deploying = make_daemon(database=dsn, node_name="node-a", **offline)
        deploying.client.deploy(_project(make_project, "shared", "tinypkg==1.0\n"))
        deploying.stop()
        # A node whose wheelhouse lacks the package: the job ends naming pip's error.
        (tmp_path / "empty").mkdir()
        lacking = node("node-b", tmp_path / "empty")
        job = lacking.client.submit("shared", {"item_list": {"items": [1], "batch_size": 1}})
        status = wait_job(lacking.client, "shared", job["job_id"])
        assert status["status"] == "worker_error", status
        assert "the venv of API shared version 1 cannot be built on this node" in status["error"]
        assert "No matching distribution found for tinypkg==1.0" in status["error"]
        assert _venvs(tmp_path / "node-b") == set()
        lacking.stop()
        # A node with the wheels builds the venv the version names, in its own venv_dir.
        building = node("node-c", wheelhouse)
        result = _run(building.client, "shared")
        (key,) = _venvs(tmp_path / "node-c")
        assert result["value"] == 1 and Path(result["prefix"]) == tmp_path / "node-c" / key
        assert (venv_dir / key / READY_FILE).is_file()
