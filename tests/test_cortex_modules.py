"""Cortex's module names in a handler (`cortex`, `cortex_internal.lib.log`), only for the
APIs that ask for them, and `python_path`: real handlers in a real daemon."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from batchd.client import BatchdError
from tests.conftest import Daemon, wait_for, wait_job
from tests.test_logs import fetch_logs
from tests.test_spare import spare_pids

Project = Callable[..., Path]
CORTEX = "cortex_modules = true\n"

LOGGING = """
from cortex_internal.lib.log import logger as cortex_logger

class Handler:
    def handle_batch(self, payload, batch_id):
        cortex_logger.info("completed processing batch", extra={"confidence": 0.97})
"""

CLIENT = """
import cortex
from cortex.exceptions import CortexBinaryException

class Handler:
    def __init__(self, job_spec):
        self.job_id = job_spec["job_id"]

    def handle_batch(self, payload):
        if payload == ["posted"]:
            return "posted"
        client = cortex.client("aws")
        api = client.get_api("cx")
        missing = None
        try:
            client.get_api("missing")
        except CortexBinaryException as exc:
            missing = [type(exc).__name__, exc.status]
        target = client.submit_job("target", {"item_list": {"items": [1], "batch_size": 1}})
        client.stop_job("target", target["job_id"])
        apis = sorted(found["spec"]["name"] for found in client.list_apis())
        client.delete("doomed")
        return {
            "api": api,
            "apis": apis,
            "job": client.get_job("cx", self.job_id),
            "missing": missing,
            "target": client.get_job("target", target["job_id"])["job_status"]["status"],
        }
"""

BLOCKING = """
import time

class Handler:
    def handle_batch(self, payload):
        time.sleep(60)
"""

IMPORTS = """
import importlib

class Handler:
    def handle_batch(self, payload):
        found = {}
        for name in ("cortex", "cortex_internal.lib.log"):
            try:
                importlib.import_module(name)
                found[name] = "imported"
            except ModuleNotFoundError as exc:
                found[name] = f"ModuleNotFoundError: {exc.name}"
        return found
"""

PYTHON_PATH = """
import os, subprocess, sys
import helper  # in src/, the API's python_path: the deploy-time check imports it too

class Handler:
    def handle_batch(self, payload):
        child = subprocess.run(
            [sys.executable, "-c", "import helper; print(helper.ANSWER)"],
            cwd="/", capture_output=True, text=True, check=True,
        )
        return {
            "answer": helper.ANSWER,
            "helper": helper.__file__,
            "cwd": os.getcwd(),
            "child": child.stdout.strip(),
            "pid": os.getpid(),
        }
"""


def run(daemon: Daemon, api: str, items: list[Any] | None = None) -> tuple[str, list[Any]]:
    client = daemon.client
    job = client.submit(api, {"item_list": {"items": items or [1], "batch_size": 1}})
    status = wait_job(client, api, job["job_id"])
    assert status["status"] == "succeeded", status
    return job["job_id"], [row["result"] for row in client.results(api, job["job_id"])]


def test_cortex_logger_lines_are_the_job_s_log(daemon: Daemon, make_project: Project) -> None:
    daemon.client.deploy(make_project("cxlog", LOGGING, extra_toml=CORTEX))
    job_id, _ = run(daemon, "cxlog")
    records = wait_for(
        lambda: [
            r
            for r in fetch_logs(daemon, "cxlog", job_id)
            if r["message"] == "completed processing batch"
        ],
        what="the cortex_logger line",
    )
    (record,) = records
    assert record["levelname"] == "INFO" and record["confidence"] == 0.97
    assert record["labels"] == {
        "apiName": "cxlog",
        "jobID": job_id,
        "workerSlot": 0,
        "batchID": f"{job_id}-1",
    }


def test_cortex_client_in_a_handler_reads_and_drives_the_daemon(
    daemon: Daemon, make_project: Project
) -> None:
    client = daemon.client
    client.deploy(make_project("cx", CLIENT, extra_toml=CORTEX))
    client.deploy(make_project("target", BLOCKING))
    client.deploy(make_project("doomed", BLOCKING))
    job_id, (result,) = run(daemon, "cx")

    api = result["api"]
    endpoint = f"{daemon.url}/batch/cx"
    assert api["endpoint"] == endpoint
    assert api["spec"]["name"] == "cx" and api["spec"]["kind"] == "BatchAPI"
    assert api["spec"]["handler"]["path"] == "handler.py"
    assert [job["job_id"] for job in api["batch_job_statuses"]] == [job_id]
    assert api["api_versions"] == [{"api_id": "1", "last_updated": api["spec"]["created_at"]}]
    assert result["apis"] == ["cx", "doomed", "target"]
    assert result["job"]["job_status"]["job_id"] == job_id
    assert result["job"]["job_status"]["status"] == "running"
    assert result["job"]["endpoint"] == endpoint
    assert result["missing"] == ["CortexBinaryException", 404]
    assert result["target"] == "stopped"
    assert "doomed" not in [found["name"] for found in client.list_apis()]

    # Cortex users POSTed jobs to the endpoint get_api gave: a plain POST works.
    request = urllib.request.Request(
        endpoint,
        data=json.dumps({"item_list": {"items": ["posted"], "batch_size": 1}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        posted = json.loads(response.read())
    assert posted["api_name"] == "cx"
    assert wait_job(client, "cx", posted["job_id"])["status"] == "succeeded"
    assert [row["result"] for row in client.results("cx", posted["job_id"])] == ["posted"]


def test_without_cortex_modules_cortex_cannot_be_imported(
    daemon: Daemon, make_project: Project
) -> None:
    # The deploy-time check imports the handler with the workers' path: refused there.
    with pytest.raises(BatchdError) as refused:
        daemon.client.deploy(make_project("bare", LOGGING))
    assert refused.value.status == 422
    assert "ModuleNotFoundError: No module named 'cortex_internal'" in refused.value.message
    daemon.client.deploy(make_project("plain", IMPORTS))
    daemon.client.deploy(make_project("ported", IMPORTS, extra_toml=CORTEX))
    assert run(daemon, "plain")[1] == [
        {
            "cortex": "ModuleNotFoundError: cortex",
            "cortex_internal.lib.log": "ModuleNotFoundError: cortex_internal",
        }
    ]
    assert run(daemon, "ported")[1] == [
        {"cortex": "imported", "cortex_internal.lib.log": "imported"}
    ]


def test_python_path_puts_a_project_folder_on_the_path(
    daemon: Daemon, make_project: Project
) -> None:
    project = make_project(
        "pp",
        PYTHON_PATH,
        files={"src/helper.py": "ANSWER = 42\n"},
        extra_toml='python_path = "src"\n',
    )
    daemon.client.deploy(project)
    _, (first,) = run(daemon, "pp")
    assert first["answer"] == 42 and first["child"] == "42"
    assert first["helper"] == f"{first['cwd']}/src/helper.py"
    # The next worker is the spare started meanwhile, elsewhere: the path follows it.
    wait_for(lambda: spare_pids(daemon), what="a spare worker")
    (spare,) = spare_pids(daemon)
    _, (second,) = run(daemon, "pp")
    assert second["pid"] == spare
    assert second["answer"] == 42 and second["child"] == "42"
    assert second["helper"] == f"{second['cwd']}/src/helper.py"


DEPLOYER = """
import cortex

class Handler:
    def handle_batch(self, payload):
        spec = {
            "name": "deployed",
            "kind": "BatchAPI",
            "handler": {"type": "python", "path": "handler.py", "config": {"k": 2}},
            "compute": {"cpu": 1, "mem": "200Mi"},
        }
        return cortex.client().deploy(spec, project_dir=payload[0])
"""

DOUBLER = """
class Handler:
    def __init__(self, config):
        self.k = config["k"]

    def handle_batch(self, payload):
        return payload[0] * self.k
"""


def test_cortex_client_deploys_a_spec_given_in_code(
    daemon: Daemon, make_project: Project, tmp_path: Path
) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (target / "handler.py").write_text(DOUBLER)
    # Stale config files in the folder: the spec given to deploy() replaces them.
    (target / "cortex.yaml").write_text("- name: stale\n")
    (target / "batchd.toml").write_text("name = 'stale'\n")
    (target / ".cortexignore").write_text("notes.txt\n")
    (target / "notes.txt").write_text("left out\n")
    daemon.client.deploy(make_project("deployer", DEPLOYER, extra_toml=CORTEX))
    _, (answer,) = run(daemon, "deployer", [str(target)])
    assert answer["api"]["spec"]["name"] == "deployed"
    assert answer["api"]["endpoint"] == f"{daemon.url}/batch/deployed"
    assert "compute.cpu" in answer["message"]
    assert daemon.client.get_api("deployed")["files"] == 1  # handler.py alone
    assert [api["name"] for api in daemon.client.list_apis()] == ["deployed", "deployer"]
    _, results = run(daemon, "deployed", [21])
    assert results == [42]
