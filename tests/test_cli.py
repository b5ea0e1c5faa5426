"""The `batchd` command line, run as a subprocess against a real daemon."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from testkit.launcher import free_port
from tests.conftest import EXAMPLE, REPO, Daemon, wait_for, wait_job
from tests.test_client import Recorder, recorder  # noqa: F401  the fixture

Project = Callable[..., Path]

SLOW_HANDLER = """
import time

class Handler:
    def __init__(self, config):
        pass

    def handle_batch(self, payload):
        time.sleep(600)
"""

PICKY_HANDLER = """
from batchd import logger

class Handler:
    def __init__(self, config):
        logger.info("ready", extra={"model": "tiny"})

    def handle_batch(self, payload, batch_id):
        if payload == ["bad"]:
            raise ValueError("cannot take bad")
        logger.warning("took " + str(payload[0]))
        return payload[0]
"""

GATED_HANDLER = """
import os, time
from batchd import logger

class Handler:
    def __init__(self, config):
        pass

    def handle_batch(self, payload):
        logger.info("waiting for the gate")
        while not os.path.exists(os.environ["GATE"]):
            time.sleep(0.01)
        logger.info("through the gate")
"""

AGO = re.compile(r"\d+[smhd] ago")
DURATION = re.compile(r"\d+ms|\d\.\d\ds|\d\d\.\ds|\d+m\d\ds|\d+h\d\dm")
ASCTIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"


def command(url: str | None, *args: str) -> list[str]:
    prefix = [sys.executable, "-m", "batchd"]
    return [*prefix, "--url", url, *args] if url is not None else [*prefix, *args]


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), **extra)
    for name in ("BATCHD_URL", "BATCHD_TOKEN"):
        if name not in extra:
            env.pop(name, None)
    return env


def batchd(
    url: str | None,
    *args: str,
    stdin: bytes | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        command(url, *args),
        input=stdin if stdin is not None else b"",
        capture_output=True,
        timeout=120,
        env=env or cli_env(),
        cwd=cwd,
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


def started(url: str, *args: str) -> subprocess.Popen[str]:
    """The command running in the background, its stdout readable line by line."""
    return subprocess.Popen(
        command(url, *args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )


def read_until(process: subprocess.Popen[str], pattern: str) -> list[str]:
    """Lines of its output up to and including the first that matches (blocking reads)."""
    assert process.stdout is not None
    lines: list[str] = []
    while True:
        line = process.stdout.readline()
        assert line, f"output ended before {pattern!r}: {lines}"
        lines.append(line.rstrip("\n"))
        if re.search(pattern, line):
            return lines


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\nstdout: {done.stdout}\n{done.stderr}"
    assert done.stderr == ""
    return done.stdout


def failed(done: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert done.returncode == code, f"exit {done.returncode}\nstdout: {done.stdout}\n{done.stderr}"
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    return done.stderr


def table(output: str) -> tuple[list[str], list[list[str]]]:
    """Split a printed table into its header and rows (columns are 2+ spaces apart)."""
    header, *rows = [re.split(r" {2,}", line.strip()) for line in output.splitlines()]
    return header, rows


def pairs(output: str) -> dict[str, str]:
    """A printed `key  value` listing as a dict (continuation lines are dropped)."""
    found = {}
    for line in output.splitlines():
        if not line.startswith(" "):
            key, value = re.split(r" {2,}", line, maxsplit=1)
            found[key] = value
    return found


def json_lines(output: str) -> list[Any]:
    return [json.loads(line) for line in output.splitlines()]


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


def run_to_end(daemon: Daemon, api: str, job_id: str, workers: int = 1) -> dict[str, Any]:
    """The job's final status, once its `workers` are gone too."""
    status = wait_job(daemon.client, api, job_id)
    settle(daemon, api, job_id, workers)
    return status


def picky_job(daemon: Daemon, make_project: Project) -> str:
    """A finished job of two batches, the second dead-lettered; all its log records in."""
    client = daemon.client
    client.deploy(make_project("picky", PICKY_HANDLER))
    job_id: str = client.submit(
        "picky", {"max_receive_count": 1, "item_list": {"items": ["a", "bad"], "batch_size": 1}}
    )["job_id"]
    assert run_to_end(daemon, "picky", job_id)["status"] == "completed_with_failures"
    wait_for(
        lambda: len(list(client.stream_job_logs("picky", job_id))) == 3,
        what="the three log records",
    )
    return job_id


# --- deploy, apis, delete -------------------------------------------------------------------


def test_deploy_prints_name_version_and_file_count(daemon: Daemon, tmp_path: Path) -> None:
    out = ok(batchd(daemon.url, "deploy", str(EXAMPLE)))
    assert out == "deployed hello version 1 (2 files)\n"
    api = daemon.client.get_api("hello")
    assert (api["version"], api["files"]) == (1, 2)
    # The same project again adds no version; a changed one does.
    assert ok(batchd(daemon.url, "deploy", str(EXAMPLE))) == (
        "deployed hello version 1 (2 files) (unchanged: same as the latest version)\n"
    )
    assert daemon.client.get_api("hello")["version"] == 1
    project = tmp_path / "hello"
    shutil.copytree(EXAMPLE, project)
    (project / "values.json").write_text('{"labels": {}}')
    assert ok(batchd(daemon.url, "deploy", str(project))) == "deployed hello version 2 (2 files)\n"
    assert [v["version"] for v in daemon.client.get_api("hello")["versions"]] == [2, 1]


def test_deploy_relative_dir(daemon: Daemon) -> None:
    out = ok(batchd(daemon.url, "deploy", "hello", cwd=EXAMPLE.parent))
    assert out.startswith("deployed hello version 1 ")


def test_deploy_of_a_folder_without_a_project(daemon: Daemon, tmp_path: Path) -> None:
    err = failed(batchd(daemon.url, "deploy", str(tmp_path)))
    assert err == (
        f"error: {tmp_path} has no batchd.toml, cortex.yaml or cortex.yml (field: batchd.toml)\n"
    )
    assert daemon.client.list_apis() == []


def test_deploy_of_an_invalid_project_spec(daemon: Daemon, make_project: Project) -> None:
    project = make_project("badname", "class Handler:\n    pass\n")
    (project / "batchd.toml").write_text('name = "Bad_Name"\n[handler]\npath = "handler.py"\n')
    err = failed(batchd(daemon.url, "deploy", str(project)))
    assert err.startswith("error: batchd.toml: name: ") and "Bad_Name" in err
    assert err.endswith(" (field: name)\n")
    (project / "batchd.toml").write_text('name = "x"\n[handler\n')
    err = failed(batchd(daemon.url, "deploy", str(project)))
    assert err.startswith("error: batchd.toml is not valid TOML: ")
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


def test_apis_lists_deployed_apis(hello: Daemon, make_project: Project) -> None:
    hello.client.deploy(make_project("slow", SLOW_HANDLER))
    changed = make_project("hello", SLOW_HANDLER.replace("class Handler", "class Handler  "))
    (changed / "batchd.toml").write_text('name = "hello"\n[handler]\npath = "handler.py"\n')
    (changed / "values.json").write_text("{}")
    hello.client.deploy(changed)
    header, rows = table(ok(batchd(hello.url, "apis")))
    assert header == ["API", "VERSION", "DEPLOYED", "FILES", "SIZE", "ENDPOINT"]
    by_name = {row[0]: row for row in rows}
    assert set(by_name) == {"hello", "slow"}
    assert [by_name["hello"][i] for i in (1, 3, 5)] == ["2", "2", "/batch/hello"]
    assert [by_name["slow"][i] for i in (1, 3, 5)] == ["1", "1", "/batch/slow"]
    assert by_name["slow"][4] == f"{len(SLOW_HANDLER)} B"
    assert all(AGO.fullmatch(row[2]) for row in rows), rows
    assert json.loads(ok(batchd(hello.url, "apis", "-o", "json"))) == hello.client.list_apis()


def test_apis_without_apis_prints_only_the_header(daemon: Daemon) -> None:
    assert ok(batchd(daemon.url, "apis")).split() == [
        "API",
        "VERSION",
        "DEPLOYED",
        "FILES",
        "SIZE",
        "ENDPOINT",
    ]
    assert json.loads(ok(batchd(daemon.url, "apis", "--output", "json"))) == []


def test_delete_stops_the_apis_jobs(daemon: Daemon, make_project: Project) -> None:
    job_id = start_slow_job(daemon, make_project)
    out = ok(batchd(daemon.url, "delete", "slow"))
    assert out == f"deleted API slow (stopped 1 job: {job_id})\n"
    assert daemon.client.list_apis() == []
    daemon.client.deploy(EXAMPLE)
    assert ok(batchd(daemon.url, "delete", "hello")) == "deleted API hello\n"
    err = failed(batchd(daemon.url, "delete", "hello"))
    assert err == "error: API 'hello' is not deployed (field: api)\n"


# --- submit ---------------------------------------------------------------------------------


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


def test_submit_items_file(hello: Daemon, tmp_path: Path) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text('0\n"x"\n\n{"a": 1}\n3\n')
    args = ["submit", "hello", "--items-file", str(items), "--batch-size", "2", "--workers", "2"]
    job = json.loads(ok(batchd(hello.url, *args)))
    assert (job["total_batch_count"], job["workers"], job["source"]) == (2, 2, "item_list")
    run_to_end(hello, "hello", job["job_id"], workers=2)
    assert [r["result"] for r in hello.client.results("hello", job["job_id"])] == [
        ["hello zero!", "hello x!"],
        ["hello {'a': 1}!", "hello three!"],
    ]
    # From stdin, with the API's default worker count.
    args = ["submit", "hello", "--items-file", "-", "--batch-size", "5"]
    job = json.loads(ok(batchd(hello.url, *args, stdin=b"1\n2\n")))
    assert (job["total_batch_count"], job["workers"]) == (1, 1)
    run_to_end(hello, "hello", job["job_id"])
    assert [r["result"] for r in hello.client.results("hello", job["job_id"])] == [
        ["hello one!", "hello two!"]
    ]
    dry = ["submit", "--dry-run", "hello", "--items-file", str(items), "--batch-size", "1"]
    assert json.loads(ok(batchd(hello.url, *dry)))["total_batch_count"] == 4


def test_submit_items_file_mistakes(hello: Daemon, tmp_path: Path) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text("1\n{nope\n")
    base = ["submit", "hello", "--items-file", str(items)]
    err = failed(batchd(hello.url, *base, "--batch-size", "1"))
    assert err.startswith(f"error: {items} line 2 is not JSON: ")
    err = failed(batchd(hello.url, *base), code=2)
    assert err == "error: --items-file needs --batch-size\n"
    both = ["submit", "hello", str(items), "--items-file", str(items), "--batch-size", "1"]
    err = failed(batchd(hello.url, *both), code=2)
    assert err == "error: give either FILE or --items-file, not both\n"
    err = failed(batchd(hello.url, "submit", "hello", "--workers", "2", stdin=b"{}"), code=2)
    assert err == "error: --batch-size and --workers go with --items-file\n"
    err = failed(batchd(hello.url, *base[:3], str(tmp_path / "absent"), "--batch-size", "1"))
    assert err == f"error: cannot read {tmp_path / 'absent'}: No such file or directory\n"
    items.write_text("1\n")
    err = failed(batchd(hello.url, *base, "--batch-size", "0"))
    assert err.startswith("error: item_list.batch_size: ")
    assert err.endswith(" (field: item_list.batch_size)\n")
    assert hello.client.list_jobs("hello") == []


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


# --- get ------------------------------------------------------------------------------------


def test_get_shows_every_api_with_its_running_and_latest_job(
    hello: Daemon, make_project: Project
) -> None:
    client = hello.client
    done = client.submit("hello", {"item_list": {"items": [1], "batch_size": 1}})["job_id"]
    run_to_end(hello, "hello", done)
    running = start_slow_job(hello, make_project)
    header, rows = table(ok(batchd(hello.url, "get")))
    assert header == ["API", "VERSION", "RUNNING", "LATEST JOB", "STATUS"]
    assert sorted(rows) == [
        ["hello", "1", "0", done, "succeeded"],
        ["slow", "1", "1", running, "running"],
    ]
    overview = json.loads(ok(batchd(hello.url, "get", "-o", "json")))
    assert sorted(overview, key=lambda api: api["name"]) == [
        {
            "name": "hello",
            "version": 1,
            "running_jobs": 0,
            "latest_job": {"job_id": done, "status": "succeeded"},
        },
        {
            "name": "slow",
            "version": 1,
            "running_jobs": 1,
            "latest_job": {"job_id": running, "status": "running"},
        },
    ]
    client.stop_job("slow", running)
    settle(hello, "slow", running)


def test_get_without_jobs_or_apis(hello: Daemon) -> None:
    _, rows = table(ok(batchd(hello.url, "get")))
    assert rows == [["hello", "1", "0", "-", "-"]]
    assert ok(batchd(hello.url, "get", "hello")).split() == [
        "JOB",
        "ID",
        "STATUS",
        "PROGRESS",
        "FAILED",
        "STARTED",
        "DURATION",
    ]
    assert json.loads(ok(batchd(hello.url, "get", "hello", "-o", "json"))) == []
    hello.client.delete("hello")
    assert ok(batchd(hello.url, "get")) == "API  VERSION  RUNNING  LATEST JOB  STATUS\n"


def test_get_api_lists_jobs_newest_first(hello: Daemon) -> None:
    client = hello.client
    first = client.submit("hello", {"item_list": {"items": [1, 2, 3], "batch_size": 1}})
    run_to_end(hello, "hello", first["job_id"])
    second = client.submit("hello", {"item_list": {"items": [1, 2], "batch_size": 2}})
    run_to_end(hello, "hello", second["job_id"])
    header, rows = table(ok(batchd(hello.url, "get", "hello")))
    assert header == ["JOB ID", "STATUS", "PROGRESS", "FAILED", "STARTED", "DURATION"]
    assert [row[0] for row in rows] == [second["job_id"], first["job_id"]]
    assert [row[1:4] for row in rows] == [["succeeded", "1/1", "0"], ["succeeded", "3/3", "0"]]
    assert all(AGO.fullmatch(row[4]) for row in rows), rows
    assert all(DURATION.fullmatch(row[5]) for row in rows), rows
    _, rows = table(ok(batchd(hello.url, "get", "hello", "--limit", "1")))
    assert [row[0] for row in rows] == [second["job_id"]]
    as_json = json.loads(ok(batchd(hello.url, "get", "hello", "-o", "json")))
    assert as_json == client.list_jobs("hello")


def test_get_api_shows_a_running_job(daemon: Daemon, make_project: Project) -> None:
    job_id = start_slow_job(daemon, make_project)
    _, rows = table(ok(batchd(daemon.url, "get", "slow")))
    assert [row[:4] for row in rows] == [[job_id, "running", "0/1", "0"]]
    assert DURATION.fullmatch(rows[0][5])
    daemon.client.stop_job("slow", job_id)
    settle(daemon, "slow", job_id)


def test_get_one_job(hello: Daemon) -> None:
    job = hello.client.submit("hello", {"item_list": {"items": [1, 2], "batch_size": 1}})
    final = run_to_end(hello, "hello", job["job_id"])
    shown = pairs(ok(batchd(hello.url, "get", "hello", job["job_id"])))
    assert shown["job id"] == job["job_id"]
    assert shown["api"] == "hello (version 1)"
    assert shown["status"] == "succeeded"
    assert shown["batches"] == "2/2 succeeded, 0 failed, 0 in progress, 0 queued"
    assert shown["failed attempts"] == "0"
    # "1 (1 succeeded)" where job_status["workers"] is the requested count (as in Cortex);
    # just the counts where the daemon puts its list of live workers there instead.
    assert shown["workers"] in ("1 (1 succeeded)", "1 succeeded")
    assert re.fullmatch(rf"{re.escape(job['start_time'])} \(\d+[smhd] ago\)", shown["started"])
    assert shown["ended"] == final["end_time"]
    assert DURATION.fullmatch(shown["duration"])
    assert (shown["timeout"], shown["max receive count"], shown["config"]) == ("-", "3", "{}")
    status = json.loads(ok(batchd(hello.url, "get", "hello", job["job_id"], "-o", "json")))
    assert status == hello.client.get_job("hello", job["job_id"])["job_status"]


def test_get_one_job_shows_its_error(daemon: Daemon, make_project: Project) -> None:
    client = daemon.client
    client.deploy(
        make_project(
            "broken",
            """
            class Handler:
                def __init__(self, config):
                    raise FileNotFoundError("model.bin is missing")
            """,
        )
    )
    job_id = client.submit("broken", {"item_list": {"items": [1], "batch_size": 1}})["job_id"]
    assert run_to_end(daemon, "broken", job_id)["status"] == "worker_error"
    out = ok(batchd(daemon.url, "get", "broken", job_id))
    assert pairs(out)["status"] == "worker_error"
    assert "Traceback" in out and "FileNotFoundError: model.bin is missing" in out


# --- get --watch ----------------------------------------------------------------------------


def test_watch_a_job_that_succeeds_exits_0(hello: Daemon) -> None:
    job_id = hello.client.submit("hello", {"item_list": {"items": [0, 1, 2], "batch_size": 1}})[
        "job_id"
    ]
    out = ok(batchd(hello.url, "get", "hello", job_id, "--watch", "--interval", "0.05"))
    *bars, summary = out.splitlines()
    assert re.fullmatch(
        rf"job {job_id} succeeded: 3/3 batches succeeded, 0 failed, took ({DURATION.pattern})",
        summary,
    ), summary
    # Printed when the status or the count of finished batches changed; the last one full.
    assert bars and len(bars) == len(set(bars))
    assert re.fullmatch(r"succeeded ━+ 3/3 0 failed (\d+\.\d\d|-) batches/s ETA \S+ \S+", bars[-1])
    assert all(re.match(r"(pending|enqueuing|running|succeeded) ", bar) for bar in bars)
    settle(hello, "hello", job_id)
    status = json.loads(ok(batchd(hello.url, "get", "hello", job_id, "--watch", "-o", "json")))
    assert status == hello.client.get_job("hello", job_id)["job_status"]


def test_watch_a_job_with_a_dead_lettered_batch_exits_1(
    daemon: Daemon, make_project: Project
) -> None:
    client = daemon.client
    client.deploy(make_project("picky", PICKY_HANDLER))
    job_id = client.submit(
        "picky", {"max_receive_count": 1, "item_list": {"items": ["a", "bad"], "batch_size": 1}}
    )["job_id"]
    done = batchd(daemon.url, "get", "picky", job_id, "--watch", "--interval", "0.05")
    assert (done.returncode, done.stderr) == (1, "")
    summary = done.stdout.splitlines()[-1]
    assert summary.startswith(
        f"job {job_id} completed_with_failures: 1/2 batches succeeded, 1 failed, took "
    )
    assert re.match(r"completed_with_failures ━+ 2/2 1 failed ", done.stdout.splitlines()[-2])
    as_json = batchd(daemon.url, "get", "picky", job_id, "--watch", "-o", "json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["status"] == "completed_with_failures"
    settle(daemon, "picky", job_id)


def test_watch_a_job_that_is_stopped_exits_3(daemon: Daemon, make_project: Project) -> None:
    job_id = start_slow_job(daemon, make_project)
    watching = started(daemon.url, "get", "slow", job_id, "--watch", "--interval", "0.05")
    # The watch has polled at least once while the job ran, then it is stopped.
    assert re.match(r"running ", read_until(watching, r"^running ")[-1])
    daemon.client.stop_job("slow", job_id)
    code, out, err = finish(watching)
    assert (code, err) == (3, "")
    assert out.splitlines()[-2].startswith("stopped ")
    assert out.splitlines()[-1].startswith(
        f"job {job_id} stopped: 0/1 batches succeeded, 0 failed, took "
    )
    settle(daemon, "slow", job_id)


def test_watch_a_job_whose_workers_fail_exits_2(daemon: Daemon, make_project: Project) -> None:
    client = daemon.client
    client.deploy(
        make_project(
            "broken",
            """
            class Handler:
                def __init__(self, config):
                    raise RuntimeError("no model")
            """,
        )
    )
    job_id = client.submit("broken", {"item_list": {"items": [1], "batch_size": 1}})["job_id"]
    done = batchd(daemon.url, "get", "broken", job_id, "--watch", "--interval", "0.05")
    assert (done.returncode, done.stderr) == (2, "")
    assert f"job {job_id} worker_error: 0/1 batches succeeded" in done.stdout
    assert "RuntimeError: no model" in done.stdout
    settle(daemon, "broken", job_id)


def test_watch_needs_a_job(hello: Daemon) -> None:
    err = failed(batchd(hello.url, "get", "hello", "--watch"), code=2)
    assert err == "error: --watch needs API and JOB_ID\n"


# --- logs, results, failed, retry, stop -----------------------------------------------------


def test_logs_human_and_json(daemon: Daemon, make_project: Project) -> None:
    job_id = picky_job(daemon, make_project)
    records = list(daemon.client.stream_job_logs("picky", job_id))
    assert [r["message"] for r in records] == ["ready", "took a", "handle_batch failed"]
    out = ok(batchd(daemon.url, "logs", "picky", job_id))
    first, second, third, *traceback = out.splitlines()
    assert re.fullmatch(rf"{ASCTIME} INFO     ready", first), first
    assert first.startswith(records[0]["asctime"] + " ")
    assert re.fullmatch(rf"{ASCTIME} WARNING  \[{job_id}-1\] took a", second), second
    assert re.fullmatch(rf"{ASCTIME} ERROR    \[{job_id}-2\] handle_batch failed", third), third
    assert traceback[0] == "Traceback (most recent call last):"
    assert traceback[-1] == "ValueError: cannot take bad"

    as_json = json_lines(ok(batchd(daemon.url, "logs", "picky", job_id, "-o", "json")))
    assert as_json == records
    out = ok(batchd(daemon.url, "logs", "picky", job_id, "--level", "warning"))
    assert [re.split(r" +", line, maxsplit=4)[3:] for line in out.splitlines()[:2]] == [
        [f"[{job_id}-1]", "took a"],
        [f"[{job_id}-2]", "handle_batch failed"],
    ]
    out = ok(batchd(daemon.url, "logs", "picky", job_id, "--batch", f"{job_id}-1", "-o", "json"))
    assert [r["message"] for r in json_lines(out)] == ["took a"]
    err = failed(batchd(daemon.url, "logs", "picky", job_id, "--level", "LOUD"))
    assert err.startswith("error: level must be one of ") and err.endswith("(field: level)\n")


def test_logs_follow(daemon: Daemon, make_project: Project, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    client = daemon.client
    client.deploy(
        make_project("gated", GATED_HANDLER, extra_toml=f'[handler.env]\nGATE = "{gate}"\n')
    )
    job_id = client.submit("gated", {"item_list": {"items": [1], "batch_size": 1}})["job_id"]
    following = started(daemon.url, "logs", "gated", job_id, "-f")
    (line,) = read_until(following, "waiting for the gate")
    assert re.fullmatch(rf"{ASCTIME} INFO     \[{job_id}-1\] waiting for the gate", line)
    # The record came while the batch was held at the gate: the stream is live.
    assert client.get_job("gated", job_id)["job_status"]["status"] == "running"
    gate.touch()
    code, out, err = finish(following)
    assert (code, err) == (0, "")
    assert re.fullmatch(rf"{ASCTIME} INFO     \[{job_id}-1\] through the gate\n", out)
    assert client.get_job("gated", job_id)["job_status"]["status"] == "succeeded"
    settle(daemon, "gated", job_id)


def test_results_failed_and_retry(daemon: Daemon, make_project: Project) -> None:
    job_id = picky_job(daemon, make_project)
    client = daemon.client
    out = ok(batchd(daemon.url, "results", "picky", job_id))
    assert json_lines(out) == [{"batch_id": f"{job_id}-1", "result": "a"}]
    assert ok(batchd(daemon.url, "results", "picky", job_id, "-o", "json")) == out

    header, rows = table(ok(batchd(daemon.url, "failed", "picky", job_id)))
    assert header == ["BATCH ID", "ATTEMPTS", "ERROR"]
    assert rows == [[f"{job_id}-2", "1", "ValueError: cannot take bad"]]
    (dead,) = json_lines(ok(batchd(daemon.url, "failed", "picky", job_id, "-o", "json")))
    assert dead == next(client.failed("picky", job_id))
    assert dead["payload"] == ["bad"]

    retry = json.loads(ok(batchd(daemon.url, "retry", "picky", job_id)))
    assert retry["retry_of"] == job_id and retry["total_batch_count"] == 1
    assert [j["job_id"] for j in client.list_jobs("picky")] == [retry["job_id"], job_id]
    run_to_end(daemon, "picky", retry["job_id"])
    assert ok(batchd(daemon.url, "results", "picky", retry["job_id"])) == ""
    err = failed(batchd(daemon.url, "retry", "picky", f"{retry['job_id']}x"))
    assert err == f"error: job {retry['job_id']}x not found for API picky (field: jobID)\n"


def test_retry_without_dead_letters_is_an_error(hello: Daemon) -> None:
    job_id = hello.client.submit("hello", {"item_list": {"items": [1], "batch_size": 1}})["job_id"]
    run_to_end(hello, "hello", job_id)
    err = failed(batchd(hello.url, "retry", "hello", job_id))
    assert err == f"error: job {job_id} has no dead-lettered batches (field: jobID)\n"
    assert ok(batchd(hello.url, "failed", "hello", job_id)).split() == [
        "BATCH",
        "ID",
        "ATTEMPTS",
        "ERROR",
    ]


def test_stop_then_stop_again(daemon: Daemon, make_project: Project) -> None:
    job_id = start_slow_job(daemon, make_project)
    assert ok(batchd(daemon.url, "stop", "slow", job_id)) == f"stopped job {job_id}\n"
    status = daemon.client.get_job("slow", job_id)["job_status"]
    assert status["status"] == "stopped"
    err = failed(batchd(daemon.url, "stop", "slow", job_id))
    assert err == f"error: job {job_id} has already ended (stopped) (field: jobID)\n"
    out = ok(batchd(daemon.url, "get", "slow", job_id, "-o", "json"))
    assert json.loads(out)["status"] == "stopped"
    settle(daemon, "slow", job_id)


# --- errors, connection and the command itself ----------------------------------------------


def test_unknown_api_and_job(hello: Daemon, tmp_path: Path) -> None:
    expected = "error: API 'nope' is not deployed (field: api)\n"
    for args in (
        ["get", "nope"],
        ["get", "nope", "123"],
        ["get", "nope", "123", "--watch"],
        ["stop", "nope", "123"],
        ["logs", "nope", "123"],
        ["logs", "nope", "123", "-f"],
        ["results", "nope", "123"],
        ["failed", "nope", "123"],
        ["retry", "nope", "123"],
        ["delete", "nope"],
    ):
        assert failed(batchd(hello.url, *args)) == expected, args
    path = job_file(tmp_path, {"item_list": {"items": [1], "batch_size": 1}})
    assert failed(batchd(hello.url, "submit", "nope", str(path))) == expected
    expected = "error: job nosuchjob not found for API hello (field: jobID)\n"
    for args in (["get"], ["stop"], ["logs"], ["results"], ["failed"]):
        assert failed(batchd(hello.url, *args, "hello", "nosuchjob")) == expected, args


@pytest.mark.parametrize(
    "args",
    [
        ["apis"],
        ["get"],
        ["get", "hello"],
        ["get", "hello", "1"],
        ["get", "hello", "1", "--watch"],
        ["stop", "hello", "1"],
        ["submit", "hello"],
        ["logs", "hello", "1", "-f"],
        ["results", "hello", "1"],
        ["delete", "hello"],
        ["deploy", str(EXAMPLE)],
    ],
)
def test_unreachable_daemon(args: list[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    # The waiting commands (--watch, -f) give up at once: no reconnect time.
    env = cli_env(BATCHD_RECONNECT_TIMEOUT="0")
    err = failed(batchd(url, *args, stdin=b"{}", env=env), code=69)
    assert err.startswith(f"error: cannot reach batchd at {url}: ")
    assert "refused" in err.lower()
    assert err.endswith(f"; is `batchd serve` running? (BATCHD_URL={url})\n")


def test_url_from_the_environment_or_after_the_command(hello: Daemon) -> None:
    _, rows = table(ok(batchd(None, "apis", env=cli_env(BATCHD_URL=hello.url))))
    assert [row[0] for row in rows] == ["hello"]
    _, rows = table(ok(batchd(None, "get", "--url", hello.url)))
    assert [row[0] for row in rows] == ["hello"]
    # Given twice, the one after the command wins.
    _, rows = table(ok(batchd("http://127.0.0.1:1", "apis", "--url", hello.url)))
    assert [row[0] for row in rows] == ["hello"]


def test_token_is_sent_as_a_bearer_header(recorder: tuple[str, type[Recorder]]) -> None:  # noqa: F811
    url, server = recorder
    assert ok(batchd(url, "--token", "s3cret", "apis", "-o", "json")) == "[]\n"
    assert ok(batchd(url, "apis", "--token", "after", "-o", "json")) == "[]\n"
    env = cli_env(BATCHD_TOKEN="from-env", BATCHD_URL=url)
    assert ok(batchd(None, "apis", "-o", "json", env=env)) == "[]\n"
    assert ok(batchd(url, "apis", "-o", "json")) == "[]\n"
    assert [auth for _, _, auth in server.seen] == [
        "Bearer s3cret",
        "Bearer after",
        "Bearer from-env",
        None,
    ]


def test_help_and_usage_errors() -> None:
    out = ok(batchd(None, "--help"))
    for name in ("serve", "deploy", "apis", "delete", "submit", "get", "logs", "stop", "retry"):
        assert name in out
    done = batchd(None, "get", "hello", "1", "-o", "yaml")
    assert done.returncode == 2 and "invalid choice: 'yaml'" in done.stderr
    # Bare `batchd` shows the help and succeeds, as kubectl does.
    assert ok(batchd(None)) == out


def test_importing_the_cli_loads_no_heavy_packages() -> None:
    script = (
        "import sys, batchd.cli.main; "
        "print(sorted(m for m in ('rich', 'aiohttp', 'pydantic', 'aiosqlite') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=cli_env(), timeout=60
    )
    assert (done.returncode, done.stdout) == (0, "[]\n"), done.stderr


def test_check_config(tmp_path: Path) -> None:
    good = batchd(None, "check-config", str(REPO / "config" / "batchd.toml"))
    assert good.returncode == 0, good.stderr
    assert "ok (listen 127.0.0.1:8780" in good.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('listen = "nowhere"\nmax_workers = 0\nbogus = 1\n')
    result = batchd(None, "check-config", str(bad))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert any(line.startswith(f"{bad}: listen:") for line in lines), lines
    assert any(line.startswith(f"{bad}: max_workers:") for line in lines), lines
    assert f"{bad}: bogus: unknown key" in lines


def test_status_and_prune(daemon: Daemon) -> None:
    daemon.client.deploy(EXAMPLE)
    status = batchd(daemon.url, "status")
    assert status.returncode == 0, status.stderr
    assert "disk use" in status.stdout and "database" in status.stdout
    as_json = json.loads(batchd(daemon.url, "status", "-o", "json").stdout)
    assert as_json["disk_usage"]["database"] > 0
    assert as_json["gpus"] == [] and as_json["active_jobs"] == []
    dry = batchd(daemon.url, "prune", "--dry-run")
    assert dry.returncode == 0
    assert dry.stdout.startswith("would prune 0 finished job(s) older than 30 days")
    report = json.loads(batchd(daemon.url, "prune", "-o", "json").stdout)
    assert report == {
        "dry_run": False,
        "retention_days": 30.0,
        "jobs": [],
        "rows_deleted": 0,
        "log_bytes": 0,
    }
