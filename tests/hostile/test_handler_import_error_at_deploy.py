"""A handler.py that cannot be imported is refused at deploy (422 with its traceback)
and leaves no version behind, instead of failing every worker of the first job."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from batchd.client import BatchdError
from tests.conftest import Daemon, wait_job

Project = Callable[..., Path]

SYNTAX_ERROR = """
class Handler:
    def handle_batch(self, payload):
        return [x for x in payload
"""
IMPORT_ERROR = """
import no_such_module_for_batchd_tests

class Handler:
    def handle_batch(self, payload):
        return payload
"""
WORKING = """
class Handler:
    def handle_batch(self, payload):
        return [x * 2 for x in payload]
"""


def snapshot_folders(daemon: Daemon, name: str) -> list[Path]:
    folder = daemon.state_dir / "apis" / name
    return list(folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (SYNTAX_ERROR, ["SyntaxError", 'File "handler.py", line 4', "return [x for x in payload"]),
        (
            IMPORT_ERROR,
            [
                "Traceback",
                'File "handler.py", line 2, in <module>',
                "ModuleNotFoundError: No module named 'no_such_module_for_batchd_tests'",
            ],
        ),
    ],
    ids=["syntax-error", "import-error"],
)
def test_handler_import_error_is_a_422_with_the_traceback(
    daemon: Daemon, make_project: Project, source: str, expected: list[str]
) -> None:
    project = make_project("broken", source)
    with pytest.raises(BatchdError) as refused:
        daemon.client.deploy(project)
    assert refused.value.status == 422
    assert refused.value.field == "handler.path"
    message = refused.value.message
    assert message.startswith("handler.py cannot be imported:")
    for text in expected:
        assert text in message, message
    # Not batchd's loader frames: the traceback starts at the handler.
    assert "handler_probe" not in message and "importlib" not in message
    assert daemon.client.list_apis() == []
    assert snapshot_folders(daemon, "broken") == []

    # A later version that does import is version 1: the failure left nothing behind.
    (project / "handler.py").write_text(WORKING)
    assert daemon.client.deploy(project)["version"] == 1


def test_handler_check_runs_with_the_apis_env(daemon: Daemon, make_project: Project) -> None:
    source = 'import os\nSCALE = int(os.environ["SCALE_FROM_DOTENV"])\n' + WORKING
    project = make_project("envy", source, files={".env": "SCALE_FROM_DOTENV=3\n"})
    assert daemon.client.deploy(project)["version"] == 1


def test_no_check_deploys_a_broken_handler_which_fails_at_the_job(
    daemon: Daemon, make_project: Project
) -> None:
    project = make_project("broken", IMPORT_ERROR)
    done = subprocess.run(
        [sys.executable, "-m", "batchd", "deploy", "--no-check", str(project)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"BATCHD_URL": daemon.url, "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("deployed broken version 1")
    # Without the check the import error only shows once a job runs.
    job = daemon.client.submit("broken", {"item_list": {"items": [1], "batch_size": 1}})
    status = wait_job(daemon.client, "broken", job["job_id"])
    assert status["status"] == "worker_error"
    log = (daemon.state_dir / "logs" / f"{job['job_id']}.jsonl").read_text()
    assert "no_such_module_for_batchd_tests" in log


def test_handler_check_runs_under_the_apis_interpreter(
    daemon: Daemon, make_project: Project, tmp_path: Path
) -> None:
    # A bare venv: the same Python, without the daemon's libraries (aiohttp among them).
    venv = tmp_path / "bare-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    source = "import aiohttp\n" + WORKING
    project = make_project("elsewhere", source)
    spec = project / "batchd.toml"
    spec.write_text(spec.read_text().replace("[handler]\n", f'[handler]\npython = "{python}"\n'))
    with pytest.raises(BatchdError) as refused:
        daemon.client.deploy(project)
    assert refused.value.status == 422
    assert "ModuleNotFoundError: No module named 'aiohttp'" in refused.value.message
    # The daemon's own interpreter has aiohttp: without handler.python the same code imports.
    spec.write_text(spec.read_text().replace(f'python = "{python}"\n', ""))
    assert daemon.client.deploy(project)["version"] == 1


def test_handler_import_that_hangs_is_cut_off(
    make_daemon: Callable[..., Daemon], make_project: Project
) -> None:
    daemon = make_daemon(handler_check_timeout=1.0)
    project = make_project("hangs", "import time\ntime.sleep(600)\n" + WORKING)
    started = time.monotonic()
    with pytest.raises(BatchdError) as refused:
        daemon.client.deploy(project)
    assert time.monotonic() - started < 30
    assert refused.value.status == 422
    assert "took over 1s (handler_check_timeout)" in refused.value.message
    assert daemon.client.list_apis() == []
