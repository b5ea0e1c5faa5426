"""The `batchd` command line, run as a subprocess against a real daemon."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EXAMPLE, REPO, Daemon, free_port, wait_for, wait_job

Project = Callable[..., Path]

SLOW_HANDLER = """
import time

class Handler:
    def __init__(self, config):
        pass

    def handle_batch(self, payload):
        time.sleep(600)
"""

DURATION = re.compile(r"\d+h\d\dm\d\ds")


def batchd(
    url: str | None, *args: str, stdin: bytes | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("BATCHD_URL", None)
    command = [sys.executable, "-m", "batchd"]
    if url is not None:
        command += ["--url", url]
    done = subprocess.run(
        [*command, *args],
        input=stdin if stdin is not None else b"",
        capture_output=True,
        timeout=120,
        env=env,
        cwd=cwd,
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\nstdout: {done.stdout}\n{done.stderr}"
    assert done.stderr == ""
    return done.stdout


def failed(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, f"exit {done.returncode}\nstdout: {done.stdout}\n{done.stderr}"
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    return done.stderr


def table(output: str) -> tuple[list[str], list[list[str]]]:
    """Split a printed table into its header and rows (columns are 2+ spaces apart)."""
    header, *rows = [re.split(r" {2,}", line.strip()) for line in output.splitlines()]
    return header, rows


def job_file(tmp_path: Path, job: dict[str, Any], name: str = "job.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(job))
    return path


@pytest.fixture
def hello(daemon: Daemon) -> Daemon:
    daemon.client.deploy(EXAMPLE)
    return daemon


def start_slow_job(daemon: Daemon, make_project: Project) -> str:
    daemon.client.deploy(make_project("slow", SLOW_HANDLER))
    job_id: str = daemon.client.submit("slow", {"item_list": {"items": [1], "batch_size": 1}})[
        "job_id"
    ]
    wait_for(
        lambda: (
            daemon.client.get_job("slow", job_id)["job_status"]["batch_metrics"]["in_progress"] == 1
        ),
        what="the slow batch to be leased",
    )
    return job_id


def settle(daemon: Daemon, api: str, job_id: str, workers: int = 1) -> None:
    """Wait until the job's worker_counts record every worker's exit: the test then ends
    with no worker half-way out, and the daemon's teardown stays quick."""

    def reaped() -> bool:
        counts = daemon.client.get_job(api, job_id)["job_status"]["worker_counts"]
        return bool(counts["succeeded"] + counts["failed"] >= workers)

    wait_for(reaped, what=f"the workers of {job_id} to be reaped")


def run_to_end(daemon: Daemon, api: str, job_id: str) -> dict[str, Any]:
    """The job's final status, once its worker is gone too."""
    status = wait_job(daemon.client, api, job_id)
    settle(daemon, api, job_id, status["workers"])
    return status


def test_deploy_prints_name_version_and_file_count(daemon: Daemon) -> None:
    out = ok(batchd(daemon.url, "deploy", str(EXAMPLE)))
    assert out == "deployed hello version 1 (2 files)\n"
    api = daemon.client.get_api("hello")
    assert (api["version"], api["files"]) == (1, 2)
    assert ok(batchd(daemon.url, "deploy", str(EXAMPLE))) == "deployed hello version 2 (2 files)\n"
    assert daemon.client.get_api("hello")["version"] == 2


def test_deploy_relative_dir(daemon: Daemon) -> None:
    out = ok(batchd(daemon.url, "deploy", "hello", cwd=EXAMPLE.parent))
    assert out.startswith("deployed hello version 1 ")


def test_deploy_of_a_folder_without_a_project(daemon: Daemon, tmp_path: Path) -> None:
    err = failed(batchd(daemon.url, "deploy", str(tmp_path)))
    assert err == f"error: {tmp_path} has no batchd.toml\n"
    assert daemon.client.list_apis() == []


def test_deploy_of_an_invalid_project_spec(daemon: Daemon, make_project: Project) -> None:
    project = make_project("badname", "class Handler:\n    pass\n")
    (project / "batchd.toml").write_text('name = "Bad_Name"\n[handler]\npath = "handler.py"\n')
    err = failed(batchd(daemon.url, "deploy", str(project)))
    assert err.startswith("error: ") and "Bad_Name" in err
    assert daemon.client.list_apis() == []


def test_deploy_refused_by_the_server(
    make_daemon: Callable[..., Daemon], make_project: Project
) -> None:
    # The client checks against the default 32 MiB; this daemon allows much less.
    daemon = make_daemon(max_project_size=1024)
    project = make_project("big", SLOW_HANDLER, files={"weights.bin": "x" * 4096})
    err = failed(batchd(daemon.url, "deploy", str(project)))
    assert err.startswith("error: project is ") and "over the 1.0 KiB limit" in err
    assert "weights.bin (4.0 KiB)" in err
    assert daemon.client.list_apis() == []


def test_submit_from_a_file(hello: Daemon, tmp_path: Path) -> None:
    path = job_file(tmp_path, {"item_list": {"items": [0, 1, 2], "batch_size": 2}})
    job = json.loads(ok(batchd(hello.url, "submit", "hello", str(path))))
    assert job["api_name"] == "hello" and job["total_batch_count"] == 2
    assert job["source"] == "item_list"
    assert run_to_end(hello, "hello", job["job_id"])["status"] == "succeeded"
    results = [row["result"] for row in hello.client.results("hello", job["job_id"])]
    assert results == [["hello zero!", "hello one!"], ["hello two!"]]


@pytest.mark.parametrize("args", [["-"], []], ids=["dash", "default"])
def test_submit_from_stdin(hello: Daemon, args: list[str]) -> None:
    body = json.dumps({"item_list": {"items": [7], "batch_size": 1}, "priority": 4}).encode()
    job = json.loads(ok(batchd(hello.url, "submit", "hello", *args, stdin=body)))
    assert job["priority"] == 4 and job["total_batch_count"] == 1
    assert [j["job_id"] for j in hello.client.list_jobs("hello")] == [job["job_id"]]
    run_to_end(hello, "hello", job["job_id"])
    assert [r["result"] for r in hello.client.results("hello", job["job_id"])] == [["hello 7!"]]


def test_submit_dry_run_stores_nothing(hello: Daemon, tmp_path: Path) -> None:
    path = job_file(tmp_path, {"item_list": {"items": list(range(10)), "batch_size": 4}})
    report = json.loads(ok(batchd(hello.url, "submit", "--dry-run", "hello", str(path))))
    assert report == {
        "dry_run": True,
        "api_name": "hello",
        "total_batch_count": 3,
        "item_count": 10,
    }
    assert hello.client.list_jobs("hello") == []


def test_submit_invalid_job_prints_the_server_message_and_field(
    hello: Daemon, tmp_path: Path
) -> None:
    path = job_file(tmp_path, {"workers": 0, "item_list": {"items": [1], "batch_size": 1}})
    err = failed(batchd(hello.url, "submit", "hello", str(path)))
    assert err.startswith("error: workers: ") and err.endswith(" (field: workers)\n")
    err = failed(batchd(hello.url, "submit", "hello", "-", stdin=b"{nope"))
    assert err.startswith("error: request body is not valid JSON")
    assert hello.client.list_jobs("hello") == []


def test_submit_missing_file_is_an_error_not_a_traceback(hello: Daemon, tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    err = failed(batchd(hello.url, "submit", "hello", str(path)))
    assert err == f"error: cannot read {path}: No such file or directory\n"
    assert hello.client.list_jobs("hello") == []


def test_get_lists_apis(hello: Daemon, make_project: Project) -> None:
    hello.client.deploy(make_project("slow", SLOW_HANDLER))
    hello.client.deploy(EXAMPLE)
    header, rows = table(ok(batchd(hello.url, "get")))
    assert header == ["API", "VERSION", "DEPLOYED", "ENDPOINT"]
    by_name = {row[0]: row for row in rows}
    assert set(by_name) == {"hello", "slow"}
    assert by_name["hello"][1] == "2" and by_name["slow"][1] == "1"
    assert by_name["hello"][3] == "/batch/hello" and by_name["slow"][3] == "/batch/slow"
    for api in hello.client.list_apis():
        assert by_name[api["name"]][2] == api["created_at"]


def test_get_without_apis_prints_only_the_header(daemon: Daemon) -> None:
    assert ok(batchd(daemon.url, "get")).split() == ["API", "VERSION", "DEPLOYED", "ENDPOINT"]


def test_get_api_lists_jobs_newest_first(hello: Daemon) -> None:
    client = hello.client
    first = client.submit("hello", {"item_list": {"items": [1, 2, 3], "batch_size": 1}})
    run_to_end(hello, "hello", first["job_id"])
    second = client.submit("hello", {"item_list": {"items": [1, 2], "batch_size": 2}})
    run_to_end(hello, "hello", second["job_id"])
    header, rows = table(ok(batchd(hello.url, "get", "hello")))
    assert header == ["JOB ID", "STATUS", "SUCCEEDED/TOTAL", "FAILED", "START", "DURATION"]
    assert [row[0] for row in rows] == [second["job_id"], first["job_id"]]
    assert [row[1:4] for row in rows] == [["succeeded", "1/1", "0"], ["succeeded", "3/3", "0"]]
    assert rows[0][4] == second["start_time"] and rows[1][4] == first["start_time"]
    assert all(DURATION.fullmatch(row[5]) for row in rows), rows


def test_get_api_shows_a_running_job(daemon: Daemon, make_project: Project) -> None:
    job_id = start_slow_job(daemon, make_project)
    _, rows = table(ok(batchd(daemon.url, "get", "slow")))
    assert [row[:4] for row in rows] == [[job_id, "running", "0/1", "0"]]
    assert DURATION.fullmatch(rows[0][5])
    daemon.client.stop_job("slow", job_id)
    settle(daemon, "slow", job_id)


def test_get_one_job_prints_its_status_as_json(hello: Daemon) -> None:
    job = hello.client.submit("hello", {"item_list": {"items": [1, 2], "batch_size": 1}})
    run_to_end(hello, "hello", job["job_id"])
    status = json.loads(ok(batchd(hello.url, "get", "hello", job["job_id"])))
    assert status["job_id"] == job["job_id"]
    assert status["status"] == "succeeded"
    assert status["batch_metrics"]["succeeded"] == 2
    assert status["total_batch_count"] == 2
    assert status == hello.client.get_job("hello", job["job_id"])["job_status"]


def test_stop_then_stop_again(daemon: Daemon, make_project: Project) -> None:
    job_id = start_slow_job(daemon, make_project)
    assert ok(batchd(daemon.url, "stop", "slow", job_id)) == f"stopped job {job_id}\n"
    status = daemon.client.get_job("slow", job_id)["job_status"]
    assert status["status"] == "stopped"
    err = failed(batchd(daemon.url, "stop", "slow", job_id))
    assert err == f"error: job {job_id} has already ended (stopped) (field: jobID)\n"
    assert json.loads(ok(batchd(daemon.url, "get", "slow", job_id)))["status"] == "stopped"
    settle(daemon, "slow", job_id)


def test_unknown_api_and_job(hello: Daemon, tmp_path: Path) -> None:
    expected = "error: API 'nope' is not deployed (field: api)\n"
    assert failed(batchd(hello.url, "get", "nope")) == expected
    assert failed(batchd(hello.url, "get", "nope", "123")) == expected
    assert failed(batchd(hello.url, "stop", "nope", "123")) == expected
    path = job_file(tmp_path, {"item_list": {"items": [1], "batch_size": 1}})
    assert failed(batchd(hello.url, "submit", "nope", str(path))) == expected
    err = failed(batchd(hello.url, "get", "hello", "nosuchjob"))
    assert err == "error: job nosuchjob not found for API hello (field: jobID)\n"
    err = failed(batchd(hello.url, "stop", "hello", "nosuchjob"))
    assert err == "error: job nosuchjob not found for API hello (field: jobID)\n"


@pytest.mark.parametrize(
    "args",
    [["get"], ["get", "hello"], ["get", "hello", "1"], ["stop", "hello", "1"], ["submit", "hello"]],
)
def test_unreachable_daemon(args: list[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    err = failed(batchd(url, *args, stdin=b"{}"))
    assert err.startswith(f"error: cannot reach batchd at {url}: ")
    assert "refused" in err.lower()


def test_deploy_to_an_unreachable_daemon() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    err = failed(batchd(url, "deploy", str(EXAMPLE)))
    assert err.startswith(f"error: cannot reach batchd at {url}: ")


def test_url_from_the_environment(hello: Daemon) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO), BATCHD_URL=hello.url)
    done = subprocess.run(
        [sys.executable, "-m", "batchd", "get"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    _, rows = table(done.stdout)
    assert [row[0] for row in rows] == ["hello"]
