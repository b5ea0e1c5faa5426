"""Job logs: the handler's structured logger, captured prints and tracebacks, follow."""

from __future__ import annotations

import io
import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batchd.worker import log as worker_log
from tests.conftest import Daemon, wait_for, wait_job

Project = Callable[..., Path]

LOGGING_HANDLER = """
import os, sys
from batchd import logger

class Handler:
    def __init__(self, config):
        logger.info("initialised", extra={"model": "tiny"})

    def handle_batch(self, payload, batch_id):
        item = payload[0]
        if item == "fail":
            raise ValueError("no good")
        if item == "huge":
            logger.info("x" * (6 * 1024 * 1024))
            print("y" * (6 * 1024 * 1024))
        logger.info("completed processing batch", extra={
            "batch_id": batch_id, "confidence": 0.97,
            "message": "mine", "labels": "mine too", "process": -1, "levelname": "x"})
        print("printed", item)
        print("to stderr", item, file=sys.stderr)
        return os.getpid()
"""


def fetch_logs(daemon: Daemon, api: str, job_id: str, **query: str) -> list[dict[str, Any]]:
    params = "&".join(f"{k}={v}" for k, v in {"jobID": job_id, **query}.items())
    with urllib.request.urlopen(f"{daemon.url}/batch/{api}/logs?{params}", timeout=60) as r:
        assert r.headers["Content-Type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in r.read().splitlines()]


def test_structured_records_prints_and_tracebacks(daemon: Daemon, make_project: Project) -> None:
    client = daemon.client
    client.deploy(make_project("logging", LOGGING_HANDLER))
    job = client.submit(
        "logging",
        {"max_receive_count": 1, "item_list": {"items": ["a", "fail", "huge"], "batch_size": 1}},
    )
    job_id = job["job_id"]
    assert wait_job(client, "logging", job_id)["status"] == "completed_with_failures"
    pid = next(iter(client.results("logging", job_id)))["result"]
    base_labels = {"apiName": "logging", "jobID": job_id, "workerSlot": 0}

    records = wait_for(
        lambda: (
            (r := fetch_logs(daemon, "logging", job_id))
            and sum(x["message"] == "completed processing batch" for x in r) == 2
            and sum(x["message"] == "to stderr huge" for x in r) == 1
            and r
        ),
        what="all records",
    )
    for record in records:
        assert {"asctime", "levelname", "message", "process", "labels"} <= set(record)
        assert record["process"] == pid
        assert record["labels"]["jobID"] == job_id

    (init,) = [r for r in records if r["message"] == "initialised"]
    assert init["labels"] == base_labels and init["model"] == "tiny"
    assert init["levelname"] == "INFO"
    assert len(init["asctime"]) == len("2021-01-19 15:14:05,291")

    first = f"{job_id}-1"
    done = [r for r in records if r["message"] == "completed processing batch"]
    assert done[0]["labels"] == {**base_labels, "batchID": first}
    assert done[0]["batch_id"] == first and done[0]["confidence"] == 0.97
    # Reserved names in `extra` never override the metadata; they are kept, renamed.
    assert done[0]["extra_message"] == "mine" and done[0]["extra_labels"] == "mine too"
    assert done[0]["extra_process"] == -1 and done[0]["extra_levelname"] == "x"

    (printed,) = [r for r in records if r["message"] == "printed a"]
    assert printed["stream"] == "stdout" and printed["levelname"] == "INFO"
    assert printed["labels"] == {**base_labels, "batchID": first}
    (stderr,) = [r for r in records if r["message"] == "to stderr a"]
    assert stderr["stream"] == "stderr" and stderr["levelname"] == "WARNING"

    (failure,) = [r for r in records if r["message"] == "handle_batch failed"]
    assert failure["levelname"] == "ERROR"
    assert failure["labels"]["batchID"] == f"{job_id}-2"
    assert "Traceback" in failure["exc_info"] and "ValueError: no good" in failure["exc_info"]

    # Lines over 5 MB are dropped with a short warning, from the logger and from print.
    dropped = [r for r in records if "dropped" in r["message"]]
    assert len(dropped) == 2
    assert all(r["levelname"] == "WARNING" and len(json.dumps(r)) < 1000 for r in dropped)
    assert all(r["labels"].get("batchID") == f"{job_id}-3" for r in dropped)
    assert not any(len(r["message"]) > 1024 * 1024 for r in records)
    # After a dropped line the stream goes on.
    assert any(r["message"] == "printed huge" for r in records)

    errors = fetch_logs(daemon, "logging", job_id, level="ERROR")
    assert [r["message"] for r in errors] == ["handle_batch failed"]
    by_batch = fetch_logs(daemon, "logging", job_id, batchID=first)
    assert {r["labels"]["batchID"] for r in by_batch} == {first}
    assert {"completed processing batch", "printed a"} <= {r["message"] for r in by_batch}


def gated_logging_handler(gate: Path) -> str:
    """A Handler that logs "started N", waits for `gate` to exist, then logs "finished N"."""
    return f"""
        import os, time
        from batchd import logger

        class Handler:
            def __init__(self, config):
                pass

            def handle_batch(self, payload):
                logger.info("started " + str(payload[0]))
                while not os.path.exists({str(gate)!r}):
                    time.sleep(0.01)
                logger.info("finished " + str(payload[0]))
        """


def test_follow_streams_until_the_job_ends(
    daemon: Daemon, make_project: Project, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    project = make_project("follow", gated_logging_handler(gate))
    client = daemon.client
    client.deploy(project)
    job_id = client.submit("follow", {"item_list": {"items": [1, 2], "batch_size": 1}})["job_id"]
    lines: list[dict[str, Any]] = []
    url = f"{daemon.url}/batch/follow/logs?jobID={job_id}&follow=true"

    def follow() -> None:
        with urllib.request.urlopen(url, timeout=120) as response:
            for line in response:
                lines.append(json.loads(line))

    reader = threading.Thread(target=follow)
    reader.start()
    wait_for(lambda: any(r["message"] == "started 1" for r in lines), what="live record")
    assert reader.is_alive()
    gate.touch()
    reader.join(timeout=120)
    assert not reader.is_alive()
    messages = [r["message"] for r in lines]
    assert messages == ["started 1", "finished 1", "started 2", "finished 2"]
    assert client.get_job("follow", job_id)["job_status"]["status"] == "succeeded"


def test_bad_level_filter_is_400(daemon: Daemon, make_project: Project) -> None:
    client = daemon.client
    client.deploy(
        make_project(
            "lv",
            "class Handler:\n    def __init__(self, config): pass\n"
            "    def handle_batch(self, payload): pass\n",
        )
    )
    job_id = client.submit("lv", {"item_list": {"items": [1], "batch_size": 1}})["job_id"]
    try:
        fetch_logs(daemon, "lv", job_id, level="LOUD")
    except urllib.error.HTTPError as exc:
        assert exc.code == 400
        assert json.loads(exc.read())["error"]["field"] == "level"
    else:
        raise AssertionError("expected a 400")


def test_record_formatting_in_process() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("batchd.handler")
    handler = worker_log.JsonLinesHandler(stream)
    logger.addHandler(handler)
    try:
        worker_log.labels["batchID"] = "b-1"
        worker_log.logger.warning("hello %s", "world", extra={"k": {"nested": 1}, "asctime": 5})
    finally:
        worker_log.labels.pop("batchID")
        logger.removeHandler(handler)
    record = json.loads(stream.getvalue())
    assert record["message"] == "hello world"
    assert record["levelname"] == "WARNING"
    assert record["labels"] == {"batchID": "b-1"}
    assert record["k"] == {"nested": 1}
    assert record["extra_asctime"] == 5 and isinstance(record["asctime"], str)
