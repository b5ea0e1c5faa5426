"""The HTTP surface: every client mistake is a 4xx with one JSON error shape."""

from __future__ import annotations

import io
import json
import tarfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EXAMPLE, Daemon, wait_job


def request(
    daemon: Daemon,
    method: str,
    path: str,
    body: bytes | None = None,
    content_type: str | None = "application/json",
) -> tuple[int, Any]:
    req = urllib.request.Request(daemon.url + path, data=body, method=method)
    if content_type is not None and body is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        status = exc.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


def error_of(payload: Any) -> dict[str, Any]:
    assert isinstance(payload, dict) and set(payload) == {"error"}, payload
    error: dict[str, Any] = payload["error"]
    assert isinstance(error["message"], str) and error["message"]
    return error


@pytest.fixture
def hello(daemon: Daemon) -> Daemon:
    daemon.client.deploy(EXAMPLE)
    return daemon


def test_healthz(daemon: Daemon) -> None:
    assert request(daemon, "GET", "/healthz") == (200, {"status": "ok"})


def test_curl_style_form_content_type_is_accepted(hello: Daemon) -> None:
    body = json.dumps({"item_list": {"items": [1], "batch_size": 1}}).encode()
    status, job = request(hello, "POST", "/batch/hello", body, "application/x-www-form-urlencoded")
    assert status == 200, job
    assert wait_job(hello.client, "hello", job["job_id"])["status"] == "succeeded"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"{not json", 400, None),
        (b"[1, 2]", 400, None),
        (b'{"workers": 0, "item_list": {"items": [1], "batch_size": 1}}', 422, "workers"),
        (b'{"item_list": {"items": [1], "batch_size": 0}}', 422, "item_list.batch_size"),
        (b'{"item_list": {"items": [], "batch_size": 1}}', 422, "item_list.items"),
        (b'{"item_list": {"items": [1], "batch_size": 1}, "bogus": 1}', 422, "bogus"),
        (b'{"workers": 1}', 422, "item_list"),
        (b'{"item_list": {"items": [1], "batch_size": 1}, "timeout": -1}', 422, "timeout"),
        (b'{"item_list": {"items": [1], "batch_size": 1}, "config": [1]}', 422, "config"),
        # Unpaired surrogates: once a 500 in items, and a job that never started in config.
        (rb'{"item_list": {"items": ["\ud800"], "batch_size": 1}}', 400, "item_list.items[0]"),
        (
            rb'{"item_list": {"items": [1], "batch_size": 1}, "config": {"a": "\udc00"}}',
            400,
            "config.a",
        ),
    ],
)
def test_bad_submissions_are_refused_and_store_nothing(
    hello: Daemon, body: bytes, status: int, field: str | None
) -> None:
    got, payload = request(hello, "POST", "/batch/hello", body)
    assert got == status, payload
    assert error_of(payload).get("field") == field
    assert hello.client.list_jobs("hello") == []


def test_oversized_item_is_refused(hello: Daemon) -> None:
    item = "x" * (256 * 1024 + 1)
    body = json.dumps({"item_list": {"items": ["ok", item], "batch_size": 1}}).encode()
    status, payload = request(hello, "POST", "/batch/hello", body)
    assert status == 422
    assert error_of(payload)["field"] == "item_list.items[1]"
    assert hello.client.list_jobs("hello") == []


def test_wrong_content_type_is_415(hello: Daemon) -> None:
    status, payload = request(hello, "POST", "/batch/hello", b"<job/>", "application/xml")
    assert status == 415
    assert "application/json" in error_of(payload)["message"]


def test_dry_run_validates_without_storing(hello: Daemon) -> None:
    body = json.dumps({"item_list": {"items": list(range(10)), "batch_size": 3}}).encode()
    status, report = request(hello, "POST", "/batch/hello?dryRun=true", body)
    assert status == 200
    assert report["dry_run"] is True and report["total_batch_count"] == 4
    assert hello.client.list_jobs("hello") == []


def test_unknown_api_and_job_are_404(hello: Daemon) -> None:
    body = json.dumps({"item_list": {"items": [1], "batch_size": 1}}).encode()
    status, payload = request(hello, "POST", "/batch/nope", body)
    assert status == 404 and "nope" in error_of(payload)["message"]
    status, payload = request(hello, "GET", "/batch/hello?jobID=doesnotexist")
    assert status == 404 and error_of(payload)["field"] == "jobID"
    status, payload = request(hello, "DELETE", "/batch/hello?jobID=doesnotexist")
    assert status == 404
    status, payload = request(hello, "GET", "/batch/hello/results?jobID=doesnotexist")
    assert status == 404
    status, payload = request(hello, "DELETE", "/batch/hello")
    assert status == 400 and error_of(payload)["field"] == "jobID"
    status, payload = request(hello, "GET", "/apis/nope")
    assert status == 404
    status, payload = request(hello, "GET", "/no/such/path")
    assert status == 404
    error_of(payload)


def test_method_not_allowed_is_json(hello: Daemon) -> None:
    status, payload = request(hello, "PUT", "/batch/hello", b"{}")
    assert status == 405
    error_of(payload)


def test_job_status_shape(hello: Daemon) -> None:
    client = hello.client
    job = client.submit("hello", {"item_list": {"items": [1, 2, 3], "batch_size": 2}})
    wait_job(client, "hello", job["job_id"])
    status, body = request(hello, "GET", f"/batch/hello?jobID={job['job_id']}")
    assert status == 200
    assert set(body) == {"job_status", "endpoint", "api_spec"}
    assert body["endpoint"] == f"{hello.url}/batch/hello"
    assert body["api_spec"]["name"] == "hello" and body["api_spec"]["version"] == 1
    job_status = body["job_status"]
    for key in (
        "job_id",
        "api_name",
        "status",
        "workers",
        "config",
        "timeout",
        "max_receive_count",
        "priority",
        "total_batch_count",
        "start_time",
        "end_time",
        "batches_in_queue",
        "batch_metrics",
        "worker_counts",
    ):
        assert key in job_status, key
    assert set(job_status["batch_metrics"]) == {
        "succeeded",
        "failed",
        "in_progress",
        "failed_attempts",
        "average_time_per_batch",
    }
    assert job_status["batch_metrics"]["succeeded"] == 2
    assert job_status["batch_metrics"]["average_time_per_batch"] >= 0


def test_jobs_are_listed_newest_first(hello: Daemon) -> None:
    client = hello.client
    ids = [
        client.submit("hello", {"item_list": {"items": [i], "batch_size": 1}})["job_id"]
        for i in range(3)
    ]
    assert [job["job_id"] for job in client.list_jobs("hello")] == list(reversed(ids))


def _tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_deploy_refuses_unsafe_and_invalid_uploads(daemon: Daemon) -> None:
    toml = b'name = "evil"\n[handler]\npath = "handler.py"\n'
    handler = b"class Handler:\n    pass\n"
    cases = [
        (_tar({"batchd.toml": toml, "handler.py": handler, "../escape.py": b""}), 422),
        (_tar({"batchd.toml": toml, "handler.py": handler, "/etc/evil": b""}), 422),
        (_tar({"handler.py": handler}), 422),
        (_tar({"batchd.toml": b'name = "Bad_Name"\n[handler]\npath = "h.py"\n'}), 422),
        (b"this is not a tar archive", 400),
    ]
    for archive, expected in cases:
        status, payload = request(daemon, "POST", "/apis", archive, "application/gzip")
        assert status == expected, payload
        error_of(payload)
    assert daemon.client.list_apis() == []
    status, payload = request(daemon, "POST", "/apis", b"{}", "application/json")
    assert status == 415


def test_delete_api_stops_its_jobs(daemon: Daemon, make_project: Any, tmp_path: Path) -> None:
    project = make_project(
        "doomed",
        """
        import time

        class Handler:
            def __init__(self, config):
                pass

            def handle_batch(self, payload):
                time.sleep(600)
        """,
    )
    client = daemon.client
    client.deploy(project)
    job = client.submit("doomed", {"item_list": {"items": [1], "batch_size": 1}})
    deleted = client.delete("doomed")
    assert deleted["stopped_jobs"] == [job["job_id"]]
    assert client.list_apis() == []
    status, _ = request(daemon, "GET", f"/batch/doomed?jobID={job['job_id']}")
    assert status == 404
    # Redeploying starts a new version; the old job is stopped for good.
    client.deploy(project)
    final = client.get_job("doomed", job["job_id"])["job_status"]
    assert final["status"] == "stopped"
    assert "deleted" in final["error"]


def test_nesting_deeper_than_max_json_depth_is_400(make_daemon: Any) -> None:
    daemon = make_daemon(max_json_depth=8)
    daemon.client.deploy(EXAMPLE)
    nested: Any = 1
    for _ in range(8):
        nested = [nested]
    body = json.dumps({"item_list": {"items": [nested], "batch_size": 1}}).encode()
    status, payload = request(daemon, "POST", "/batch/hello", body)
    assert status == 400
    assert "nested deeper than 8 levels (max_json_depth)" in error_of(payload)["message"]
    shallow = json.dumps({"item_list": {"items": [[[1]]], "batch_size": 1}}).encode()
    assert request(daemon, "POST", "/batch/hello", shallow)[0] == 200
