"""The Python client against a real daemon, from the test's interpreter and from a bare one."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import batchd
from batchd.client import TERMINAL_STATUSES, BatchdError, Client, WaitTimeout
from testkit.launcher import free_port
from tests.conftest import EXAMPLE, REPO, Daemon, wait_for, wait_job

Project = Callable[..., Path]

GATED_HANDLER = """
import os, time
from batchd import logger

class Handler:
    def __init__(self, config):
        pass

    def handle_batch(self, payload, batch_id):
        logger.info("waiting for the gate", extra={"item": payload[0]})
        while not os.path.exists(os.environ["GATE"]):
            time.sleep(0.01)
        logger.info("through the gate")
        return payload[0]
"""

PICKY_HANDLER = """
from batchd import logger

class Handler:
    def __init__(self, config):
        pass

    def handle_batch(self, payload, batch_id):
        if payload == ["bad"]:
            raise ValueError("cannot take bad")
        logger.warning("took it", extra={"item": payload[0]})
        return payload[0]
"""


def raised(call: Callable[[], Any]) -> BatchdError:
    with pytest.raises(BatchdError) as caught:
        result = call()
        if isinstance(result, Iterator):
            list(result)
    return caught.value


def gated_project(make_project: Project, gate: Path, name: str = "gated") -> Path:
    return make_project(name, GATED_HANDLER, extra_toml=f'[handler.env]\nGATE = "{gate}"\n')


# --- every call -----------------------------------------------------------------------------


def test_deploy_inspect_submit_and_read_back(daemon: Daemon, tmp_path: Path) -> None:
    client = daemon.client
    api = client.deploy(EXAMPLE)
    assert (api["name"], api["version"], api["files"]) == ("hello", 1, 2)
    assert api["endpoint"] == "/batch/hello"
    assert api["handler"]["config"] == {"greeting": "hello"}
    again = client.deploy(str(EXAMPLE))
    assert (again["version"], again["unchanged"]) == (1, True)
    changed = tmp_path / "hello"
    shutil.copytree(EXAMPLE, changed)
    (changed / "extra.txt").write_text("more")
    assert client.deploy(changed)["version"] == 2
    assert [(a["name"], a["version"]) for a in client.list_apis()] == [("hello", 2)]
    detail = client.get_api("hello")
    assert [v["version"] for v in detail["versions"]] == [2, 1]

    report = client.submit(
        "hello", {"item_list": {"items": list(range(5)), "batch_size": 2}}, dry_run=True
    )
    assert report == {"dry_run": True, "api_name": "hello", "total_batch_count": 3, "item_count": 5}
    assert client.list_jobs("hello") == []

    first = client.submit("hello", {"item_list": {"items": [0, 1, 2], "batch_size": 2}})
    assert (first["api_name"], first["api_version"], first["total_batch_count"]) == ("hello", 2, 2)
    # A body given as bytes is sent as it is.
    second = client.submit("hello", b'{"item_list": {"items": [3], "batch_size": 1}}')
    for job in (first, second):
        assert wait_job(client, "hello", job["job_id"])["status"] == "succeeded"

    answer = client.get_job("hello", first["job_id"])
    assert set(answer) == {"job_status", "endpoint", "api_spec"}
    assert answer["endpoint"] == f"{daemon.url}/batch/hello"
    assert answer["api_spec"]["version"] == 2
    status = answer["job_status"]
    assert status["job_id"] == first["job_id"] and status["status"] == "succeeded"
    assert status["batch_metrics"]["succeeded"] == 2 and status["batch_metrics"]["failed"] == 0

    assert [j["job_id"] for j in client.list_jobs("hello")] == [second["job_id"], first["job_id"]]
    assert [j["job_id"] for j in client.list_jobs("hello", limit=1)] == [second["job_id"]]
    assert [r["result"] for r in client.results("hello", first["job_id"])] == [
        ["hello zero!", "hello one!"],
        ["hello two!"],
    ]
    assert [r["batch_id"] for r in client.results("hello", first["job_id"])] == [
        f"{first['job_id']}-1",
        f"{first['job_id']}-2",
    ]
    assert list(client.failed("hello", first["job_id"])) == []


def test_failed_batches_retry_and_logs(daemon: Daemon, make_project: Project) -> None:
    client = daemon.client
    client.deploy(make_project("picky", PICKY_HANDLER))
    job = client.submit(
        "picky", {"max_receive_count": 1, "item_list": {"items": ["a", "bad"], "batch_size": 1}}
    )
    job_id = job["job_id"]
    assert wait_job(client, "picky", job_id)["status"] == "completed_with_failures"
    (dead,) = list(client.failed("picky", job_id))
    assert dead["batch_id"] == f"{job_id}-2" and dead["payload"] == ["bad"]
    assert dead["attempts"] == 1 and dead["error"] == "ValueError: cannot take bad"
    assert "Traceback" in dead["traceback"]

    records = wait_for(
        lambda: (
            (found := list(client.stream_job_logs("picky", job_id)))
            and any(r["message"] == "handle_batch failed" for r in found)
            and found
        ),
        what="the failure in the job log",
    )
    assert all({"asctime", "levelname", "message", "process", "labels"} <= set(r) for r in records)
    (took,) = [r for r in records if r["message"] == "took it"]
    assert took["item"] == "a" and took["levelname"] == "WARNING"
    assert took["labels"] == {
        "apiName": "picky",
        "jobID": job_id,
        "workerSlot": 0,
        "batchID": f"{job_id}-1",
    }
    errors = list(client.stream_job_logs("picky", job_id, level="error"))
    assert [r["message"] for r in errors] == ["handle_batch failed"]
    of_batch = list(client.stream_job_logs("picky", job_id, batch_id=f"{job_id}-1"))
    assert [r["message"] for r in of_batch] == ["took it"]

    retry = client.retry("picky", job_id)
    assert retry["retry_of"] == job_id and retry["total_batch_count"] == 1
    assert wait_job(client, "picky", retry["job_id"])["status"] == "completed_with_failures"
    assert [d["payload"] for d in client.failed("picky", retry["job_id"])] == [["bad"]]


def test_follow_streams_until_the_job_ends_without_a_read_timeout(
    daemon: Daemon, make_project: Project, tmp_path: Path
) -> None:
    project = make_project(
        "quiet",
        """
        import time
        from batchd import logger

        class Handler:
            def __init__(self, config):
                pass

            def handle_batch(self, payload):
                logger.info("before the quiet second")
                time.sleep(1.0)
                logger.info("after the quiet second")
        """,
    )
    daemon.client.deploy(project)
    job_id = daemon.client.submit("quiet", {"item_list": {"items": [1], "batch_size": 1}})["job_id"]
    # Far below the quiet second: a follow that kept this read timeout would break off.
    impatient = Client(daemon.url, timeout=0.3)
    messages = [r["message"] for r in impatient.stream_job_logs("quiet", job_id, follow=True)]
    assert messages == ["before the quiet second", "after the quiet second"]
    assert daemon.client.get_job("quiet", job_id)["job_status"]["status"] == "succeeded"


def test_follow_yields_records_while_the_job_runs(
    daemon: Daemon, make_project: Project, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    client = daemon.client
    client.deploy(gated_project(make_project, gate))
    job_id = client.submit("gated", {"item_list": {"items": ["x"], "batch_size": 1}})["job_id"]
    seen: list[dict[str, Any]] = []
    for record in client.stream_job_logs("gated", job_id, follow=True):
        seen.append(record)
        if record["message"] == "waiting for the gate":
            # Only reached if the record came while the batch was still held at the gate.
            assert client.get_job("gated", job_id)["job_status"]["status"] == "running"
            gate.touch()
    assert [r["message"] for r in seen] == ["waiting for the gate", "through the gate"]
    assert seen[0]["item"] == "x"
    assert client.get_job("gated", job_id)["job_status"]["status"] in TERMINAL_STATUSES


def test_wait_reports_progress_and_times_out(
    daemon: Daemon, make_project: Project, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    client = daemon.client
    client.deploy(gated_project(make_project, gate))
    job_id = client.submit("gated", {"item_list": {"items": [1, 2, 3], "batch_size": 1}})["job_id"]

    with pytest.raises(WaitTimeout) as caught:
        client.wait("gated", job_id, poll_interval=0.01, timeout=0.05)
    assert isinstance(caught.value, TimeoutError)
    assert (caught.value.status, caught.value.field) == (408, "timeout")
    assert caught.value.job_status["status"] not in TERMINAL_STATUSES
    assert (
        caught.value.message
        == f"job {job_id} still {caught.value.job_status['status']} after 0.05s"
    )

    seen: list[dict[str, Any]] = []
    gate.touch()
    final = client.wait("gated", job_id, poll_interval=0.01, progress=seen.append)
    assert seen and seen[-1] == final
    assert final["status"] == "succeeded" and final["batch_metrics"]["succeeded"] == 3
    assert all(s["status"] not in TERMINAL_STATUSES for s in seen[:-1])
    done = [s["batch_metrics"]["succeeded"] for s in seen]
    assert done == sorted(done)


def test_stop_and_delete(daemon: Daemon, make_project: Project, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    client = daemon.client
    client.deploy(gated_project(make_project, gate))
    first = client.submit("gated", {"item_list": {"items": [1], "batch_size": 1}})["job_id"]
    second = client.submit("gated", {"item_list": {"items": [2], "batch_size": 1}})["job_id"]
    assert client.stop_job("gated", first) == {"message": f"stopped job {first}"}
    assert client.get_job("gated", first)["job_status"]["status"] == "stopped"

    answer = client.delete("gated")
    assert answer == {"message": "deleted API gated", "stopped_jobs": [second]}
    assert client.list_apis() == []
    gone = raised(lambda: client.get_api("gated"))
    assert (gone.status, gone.field) == (404, "api")


# --- errors ---------------------------------------------------------------------------------


def test_errors_carry_status_message_and_field(
    daemon: Daemon, make_project: Project, tmp_path: Path
) -> None:
    client = daemon.client
    client.deploy(EXAMPLE)
    job_id = client.submit("hello", {"item_list": {"items": [1], "batch_size": 1}})["job_id"]
    assert wait_job(client, "hello", job_id)["status"] == "succeeded"

    unknown_api = "API 'nope' is not deployed"
    for call in (
        lambda: client.get_api("nope"),
        lambda: client.delete("nope"),
        lambda: client.submit("nope", {"item_list": {"items": [1], "batch_size": 1}}),
        lambda: client.get_job("nope", job_id),
        lambda: client.list_jobs("nope"),
        lambda: client.stop_job("nope", job_id),
        lambda: client.retry("nope", job_id),
        lambda: client.results("nope", job_id),
        lambda: client.failed("nope", job_id),
        lambda: client.stream_job_logs("nope", job_id),
    ):
        error = raised(call)
        assert (error.status, error.message, error.field) == (404, unknown_api, "api")
        assert str(error) == f"404: {unknown_api}"

    unknown_job = "job nojob not found for API hello"
    for call in (
        lambda: client.get_job("hello", "nojob"),
        lambda: client.stop_job("hello", "nojob"),
        lambda: client.retry("hello", "nojob"),
        lambda: client.stream_job_logs("hello", "nojob", follow=True),
        lambda: client.wait("hello", "nojob"),
    ):
        error = raised(call)
        assert (error.status, error.message, error.field) == (404, unknown_job, "jobID")
    # Streams are opened by the call itself, not by the first next().
    with pytest.raises(BatchdError):
        client.results("hello", "nojob")

    ended = raised(lambda: client.stop_job("hello", job_id))
    assert (ended.status, ended.field) == (409, "jobID")
    assert ended.message == f"job {job_id} has already ended (succeeded)"
    nothing = raised(lambda: client.retry("hello", job_id))
    assert (nothing.status, nothing.field) == (409, "jobID")
    assert nothing.message == f"job {job_id} has no dead-lettered batches"

    invalid = raised(
        lambda: client.submit("hello", {"workers": 0, "item_list": {"items": [1], "batch_size": 1}})
    )
    assert (invalid.status, invalid.field) == (422, "workers")
    assert invalid.message.startswith("workers: ")
    level = raised(lambda: client.stream_job_logs("hello", job_id, level="LOUD"))
    assert (level.status, level.field) == (400, "level")

    # Refused by the server: the spec is checked fully there.
    project = make_project("badname", "class Handler:\n    pass\n")
    (project / "batchd.toml").write_text('name = "Bad_Name"\n[handler]\npath = "handler.py"\n')
    bad_name = raised(lambda: client.deploy(project))
    assert (bad_name.status, bad_name.field) == (422, "name")
    assert "Bad_Name" in bad_name.message
    assert [j["job_id"] for j in client.list_jobs("hello")] == [job_id]


def test_deploy_refused_before_uploading(daemon: Daemon, tmp_path: Path) -> None:
    client = daemon.client
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = raised(lambda: client.deploy(empty))
    assert (missing.status, missing.field) == (422, "batchd.toml")
    assert missing.message == f"{empty} has no batchd.toml, cortex.yaml or cortex.yml"

    project = tmp_path / "project"
    project.mkdir()
    (project / "batchd.toml").write_text('name = "big"\n[handler]\npath = "handler.py"\n')
    no_handler = raised(lambda: client.deploy(project))
    assert (no_handler.status, no_handler.field) == (422, "handler.path")
    (project / "handler.py").write_text("class Handler:\n    pass\n")
    (project / "weights.bin").write_bytes(b"\0" * 4096)
    too_big = raised(lambda: client.deploy(project, max_bytes=1024))
    assert (too_big.status, too_big.field) == (413, "project")
    assert "largest files: weights.bin (4.0 KiB), handler.py (24 B)" in too_big.message
    # With the file ignored it fits: the ignore file is applied before the size check.
    (project / ".batchdignore").write_text("*.bin\n")
    assert client.deploy(project, max_bytes=1024)["files"] == 1
    assert client.list_apis()[0]["name"] == "big"


def test_unreachable_daemon_is_status_0() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = Client(url)
    for call in (
        client.list_apis,
        lambda: client.get_job("hello", "1"),
        lambda: client.results("hello", "1"),
        # A followed log waits for the daemon up to its reconnect timeout (here none).
        lambda: client.stream_job_logs("hello", "1", follow=True, reconnect_timeout=0),
        lambda: client.deploy(EXAMPLE),
    ):
        error = raised(call)
        assert error.status == 0 and error.field is None
        assert error.message.startswith(f"cannot reach batchd at {url}: ")
        assert "refused" in error.message.lower()
        assert str(error) == error.message


# --- url, token and what goes over the wire -------------------------------------------------


class Recorder(http.server.BaseHTTPRequestHandler):
    """A stand-in server that notes each request and answers what `answers` holds."""

    seen: list[tuple[str, str, str | None]] = []
    answers: dict[str, tuple[int, str, bytes]] = {}

    def do_GET(self) -> None:
        type(self).seen.append((self.command, self.path, self.headers.get("Authorization")))
        status, content_type, body = self.answers.get(
            self.path, (200, "application/json", b'{"apis": []}')
        )
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, type[Recorder]]]:
    handler = type("R", (Recorder,), {"seen": [], "answers": {}})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_url_and_token_from_arguments_or_environment(
    recorder: tuple[str, type[Recorder]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, server = recorder
    monkeypatch.delenv("BATCHD_TOKEN", raising=False)
    monkeypatch.setenv("BATCHD_URL", url + "/")
    assert batchd.client().url == url
    assert batchd.client().list_apis() == []
    assert Client(url, token="s3cret").list_apis() == []
    monkeypatch.setenv("BATCHD_TOKEN", "from-env")
    assert batchd.client().list_apis() == []
    assert batchd.client(token="given").list_apis() == []
    assert server.seen == [
        ("GET", "/apis", None),
        ("GET", "/apis", "Bearer s3cret"),
        ("GET", "/apis", "Bearer from-env"),
        ("GET", "/apis", "Bearer given"),
    ]
    monkeypatch.delenv("BATCHD_URL")
    assert batchd.client().url == "http://127.0.0.1:8780"


def test_non_json_answers_are_errors(recorder: tuple[str, type[Recorder]]) -> None:
    url, server = recorder
    server.answers["/apis"] = (502, "text/plain", b"bad gateway\n")
    server.answers["/apis/odd"] = (200, "text/html", b"<html></html>")
    gateway = raised(lambda: Client(url).list_apis())
    assert (gateway.status, gateway.message, gateway.field) == (502, "bad gateway", None)
    odd = raised(lambda: Client(url).get_api("odd"))
    assert (odd.status, odd.message) == (200, f"{url} answered with something other than JSON")


# --- a bare interpreter ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A venv without pip or any package, and a folder whose only entry is `batchd`."""
    root = tmp_path_factory.mktemp("bare")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    path = root / "path"
    path.mkdir()
    (path / "batchd").symlink_to(REPO / "batchd", target_is_directory=True)
    return venv / "bin" / "python", path


def run_bare(
    bare: tuple[Path, Path], script: str, env: dict[str, str] | None = None
) -> dict[str, Any]:
    python, path = bare
    full_env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(path), **(env or {})}
    done = subprocess.run(
        [str(python), "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
        cwd=path,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_client_imports_in_a_bare_interpreter(bare_python: tuple[Path, Path]) -> None:
    result = run_bare(
        bare_python,
        """
        import json, sys
        import batchd
        from batchd import packing
        from batchd.client import BatchdError
        try:
            import pydantic
            have = True
        except ImportError:
            have = False
        print(json.dumps({
            "url": batchd.client().url,
            "prefix": sys.prefix,
            "pydantic": have,
            "pathspec": packing.pathspec_available(),
            "loaded": sorted(m for m in ("aiohttp", "pydantic", "pathspec", "rich")
                             if m in sys.modules),
        }))
        """,
        env={"BATCHD_URL": "http://example.invalid:1"},
    )
    assert result == {
        "url": "http://example.invalid:1",
        "prefix": str(bare_python[0].parent.parent),
        "pydantic": False,
        "pathspec": False,
        "loaded": [],
    }


def test_deploy_and_run_from_a_bare_interpreter(
    daemon: Daemon, make_project: Project, bare_python: tuple[Path, Path]
) -> None:
    project = make_project(
        "fromvenv",
        """
        class Handler:
            def __init__(self, config):
                pass

            def handle_batch(self, payload):
                return [item * 2 for item in payload]
        """,
        files={".batchdignore": "*.bin\n", "weights.bin": "x" * 4096, "notes.txt": "n"},
    )
    broken = make_project("broken", "class Handler:\n    pass\n")
    (broken / "batchd.toml").write_text('name = "broken"\n[handler]\npath = "absent.py"\n')
    result = run_bare(
        bare_python,
        f"""
        import json, sys
        import batchd
        from batchd.client import BatchdError

        client = batchd.client()
        # Without pathspec the ignore file cannot be applied here, so the 1 KiB check is
        # skipped (weights.bin would count) and the server applies .batchdignore.
        api = client.deploy({str(project)!r}, max_bytes=1024)
        job = client.submit("fromvenv", {{"item_list": {{"items": [1, 2, 3], "batch_size": 2}}}})
        final = client.wait("fromvenv", job["job_id"], poll_interval=0.05, timeout=90)
        errors = []
        for bad in ({str(broken)!r}, {str(project / "nope")!r}):
            try:
                client.deploy(bad)
            except BatchdError as exc:
                errors.append([exc.status, exc.field])
        print(json.dumps({{
            "api": [api["name"], api["version"], api["files"]],
            "status": final["status"],
            "results": [r["result"] for r in client.results("fromvenv", job["job_id"])],
            "errors": errors,
            "pydantic": "pydantic" in sys.modules,
        }}))
        """,
        env={"BATCHD_URL": daemon.url},
    )
    assert result == {
        "api": ["fromvenv", 1, 2],
        "status": "succeeded",
        "results": [[2, 4], [6]],
        "errors": [[422, "handler.path"], [422, "batchd.toml"]],
        "pydantic": False,
    }
    assert daemon.client.get_api("fromvenv")["size"] == len(
        (project / "handler.py").read_bytes()
    ) + len("n")


# --- chaining -------------------------------------------------------------------------------


def test_on_job_complete_chains_a_job_to_another_api(daemon: Daemon, make_project: Project) -> None:
    client = daemon.client
    client.deploy(
        make_project(
            "second",
            """
            class Handler:
                def __init__(self, config):
                    self.tag = config.get("tag")

                def handle_batch(self, payload):
                    return {"tag": self.tag, "items": payload}
            """,
        )
    )
    client.deploy(
        make_project(
            "first",
            """
            import batchd

            class Handler:
                def __init__(self, config, job_spec):
                    self.job_id = job_spec["job_id"]

                def handle_batch(self, payload):
                    return [item.upper() for item in payload]

                def on_job_complete(self):
                    client = batchd.client()
                    items = [item for row in client.results("first", self.job_id)
                             for item in row["result"]]
                    client.submit("second", {
                        "item_list": {"items": items, "batch_size": 10},
                        "config": {"tag": "from " + self.job_id},
                    })
            """,
        )
    )
    first = client.submit("first", {"item_list": {"items": ["a", "b", "c"], "batch_size": 2}})
    assert wait_job(client, "first", first["job_id"])["status"] == "succeeded"
    # on_job_complete ran before the first job ended, so the chained job exists by now.
    (chained,) = client.list_jobs("second")
    assert chained["config"] == {"tag": f"from {first['job_id']}"}
    assert wait_job(client, "second", chained["job_id"])["status"] == "succeeded"
    assert [r["result"] for r in client.results("second", chained["job_id"])] == [
        {"tag": f"from {first['job_id']}", "items": ["A", "B", "C"]}
    ]
