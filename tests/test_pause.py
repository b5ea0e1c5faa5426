"""Pausing and resuming a job or an API on a real daemon: the batches in hand finish,
nothing more is leased until the resume, and the job then completes with every result."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from batchd.client import BatchdError, Client
from batchd.constants import SCHEDULER_IDLE_INTERVAL
from tests import pg
from tests.conftest import Daemon, wait_for, wait_job
from tests.test_cli import batchd
from tests.test_metrics import by_label, scrape

Project = Callable[..., Path]

# Each call is recorded, then held until the gate file exists.
COUNTED_HANDLER = """
import os, time

class Handler:
    def handle_batch(self, payload, batch_id):
        with open(os.environ["CALLS"], "a") as calls:
            calls.write(batch_id + "\\n")
        while not os.path.exists(os.environ["GATE"]):
            time.sleep(0.01)
        return payload[0]
"""


class Counted:
    """A deployed API whose handler counts its calls and waits at a gate."""

    def __init__(self, client: Client, make_project: Project, tmp_path: Path, name: str) -> None:
        self.client, self.name = client, name
        self.calls, self.gate = tmp_path / f"{name}.calls", tmp_path / f"{name}.gate"
        env = f'[handler.env]\nCALLS = "{self.calls}"\nGATE = "{self.gate}"\n'
        client.deploy(make_project(name, COUNTED_HANDLER, extra_toml=env))

    def call_count(self) -> int:
        return len(self.calls.read_text().split()) if self.calls.exists() else 0

    def submit(self, items: list[int], **fields: Any) -> str:
        body = {"item_list": {"items": items, "batch_size": 1}, "workers": 1, **fields}
        job_id: str = self.client.submit(self.name, body)["job_id"]
        return job_id

    def status(self, job_id: str) -> dict[str, Any]:
        status: dict[str, Any] = self.client.get_job(self.name, job_id)["job_status"]
        return status

    def unchanged_for(self, seconds: float, job_id: str, expected: dict[str, Any]) -> None:
        """The job's status and the handler's calls stay as they are for several of the
        scheduler's passes (nothing but time passing can show that nothing happens)."""
        calls = self.call_count()
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            status = self.status(job_id)
            seen = {key: status["batch_metrics"][key] for key in ("succeeded", "in_progress")}
            seen.update(status=status["status"], batches_in_queue=status["batches_in_queue"])
            assert (seen, self.call_count()) == (expected, calls)
            time.sleep(0.05)


def refused(call: Callable[[], Any]) -> BatchdError:
    with pytest.raises(BatchdError) as caught:
        call()
    return caught.value


def test_a_paused_job_finishes_its_batches_in_hand_then_waits_for_the_resume(
    daemon: Daemon, make_project: Project, tmp_path: Path
) -> None:
    client = daemon.client
    api = Counted(client, make_project, tmp_path, "counted")
    job_id = api.submit(list(range(6)))
    wait_for(lambda: api.call_count() == 1, what="the first batch in the handler")

    paused = client.pause_job("counted", job_id)
    assert paused["status"] == "paused"
    in_hand = paused["batch_metrics"]["in_progress"]
    assert in_hand >= 1
    # Pausing again changes nothing.
    assert client.pause_job("counted", job_id)["status"] == "paused"
    jobs = by_label(scrape(daemon), "batchd_jobs", "status")
    assert (jobs["paused"], jobs["running"]) == (1, 0)
    for status, listed in (("paused", [job_id]), ("running", [])):
        found = client._json("GET", "/jobs", query={"status": status})["jobs"]
        assert [job["job_id"] for job in found] == listed
    api.gate.touch()
    wait_for(
        lambda: api.status(job_id)["batch_metrics"]["succeeded"] == in_hand,
        what="the batches leased before the pause to finish",
    )
    api.unchanged_for(
        2.5 * SCHEDULER_IDLE_INTERVAL,
        job_id,
        {
            "status": "paused",
            "succeeded": in_hand,
            "in_progress": 0,
            "batches_in_queue": 6 - in_hand,
        },
    )
    assert api.call_count() == in_hand

    assert client.resume_job("counted", job_id)["status"] == "running"
    final = wait_job(client, "counted", job_id)
    assert final["status"] == "succeeded"
    assert final["batch_metrics"]["succeeded"] == 6
    assert sorted(r["result"] for r in client.results("counted", job_id)) == list(range(6))
    assert api.call_count() == 6

    # A job that has ended is neither paused nor resumed.
    for call in (client.pause_job, client.resume_job):
        error = refused(lambda call=call: call("counted", job_id))  # type: ignore[misc]
        assert (error.status, error.field) == (409, "jobID")
        assert "has already ended (succeeded)" in error.message


def test_a_paused_api_holds_new_jobs_past_their_timeout_until_resumed(
    daemon: Daemon, make_project: Project, tmp_path: Path
) -> None:
    client = daemon.client
    api = Counted(client, make_project, tmp_path, "held")
    api.gate.touch()
    # From the command line: `batchd pause-api`.
    said = batchd(daemon.url, "pause-api", "held")
    assert (said.returncode, said.stdout) == (0, "paused API held (0 unfinished jobs)\n")
    assert client.pause_api("held") == {"message": "paused API held", "paused": True, "jobs": []}
    assert client.get_api("held")["paused"] is True

    # Admitted and queued, never leased; its timeout does not run while it is paused.
    timed = api.submit([1, 2, 3], timeout=1)
    expected = {"status": "paused", "succeeded": 0, "in_progress": 0, "batches_in_queue": 3}
    api.unchanged_for(1 + 1.5 * SCHEDULER_IDLE_INTERVAL, timed, expected)
    # `batchd get` counts it among the API's unfinished jobs.
    (overview,) = json.loads(batchd(daemon.url, "get", "-o", "json").stdout)
    assert (overview["name"], overview["running_jobs"]) == ("held", 1)
    # A paused job can be stopped.
    assert client.stop_job("held", timed) == {"message": f"stopped job {timed}"}
    assert api.status(timed)["status"] == "stopped"

    held = api.submit([4, 5])
    said = batchd(daemon.url, "pause", "held", held)
    assert (said.returncode, said.stdout) == (0, f"paused job {held} (status paused)\n")
    resumed = client.resume_api("held")
    assert (resumed["paused"], resumed["jobs"]) == (False, [held])
    assert client.get_api("held")["paused"] is False
    # Its own pause holds after its API's is lifted.
    assert api.status(held)["status"] == "paused" and api.call_count() == 0
    # Paused since its admission, it had not started: it is pending again, until a worker
    # of it starts.
    said = batchd(daemon.url, "resume", "held", held)
    assert (said.returncode, said.stdout) == (0, f"resumed job {held} (status pending)\n")
    final = wait_job(client, "held", held)
    assert (final["status"], final["batch_metrics"]["succeeded"]) == ("succeeded", 2)
    assert sorted(r["result"] for r in client.results("held", held)) == [4, 5]
    said = batchd(daemon.url, "resume", "held", held)
    assert (said.returncode, said.stdout) == (1, "")
    assert said.stderr == f"error: job {held} has already ended (succeeded) (field: jobID)\n"


def test_pause_requests_that_name_nothing_are_refused(daemon: Daemon) -> None:
    client = daemon.client
    for call, field in (
        (lambda: client.pause_api("nowhere"), "api"),
        (lambda: client.resume_api("nowhere"), "api"),
        (lambda: client.pause_job("nowhere", "1"), "api"),
    ):
        error = refused(call)
        assert (error.status, error.field) == (404, field)
    # The routes answer JSON errors naming the field, a missing jobID included.
    client.deploy(Path(__file__).resolve().parent.parent / "examples" / "hello")
    for query, status in (("", 400), ("?jobID=no-such-job", 404), ("?jobID=", 400)):
        error = refused(lambda q=query: client._json("POST", f"/batch/hello/pause{q}"))  # type: ignore[misc]
        assert (error.status, error.field) == (status, "jobID")


SLOW_HANDLER = """
import os, time

class Handler:
    def handle_batch(self, payload, batch_id):
        with open(os.environ["CALLS"], "a") as calls:
            calls.write(batch_id + "\\n")
        time.sleep(0.1)
        return payload[0]
"""


def test_a_pause_given_to_one_node_stops_leasing_on_every_node(
    make_daemon: Callable[..., Daemon],
    make_project: Project,
    postgres_cluster: pg.Cluster,
    tmp_path: Path,
) -> None:
    calls = tmp_path / "calls"
    project = make_project("slow", SLOW_HANDLER, extra_toml=f'[handler.env]\nCALLS = "{calls}"\n')
    with postgres_cluster.fresh_schema() as dsn:
        first, second = (
            make_daemon(database=dsn, node_name=f"node-{i}", node_timeout=5.0, max_workers=2)
            for i in range(2)
        )
        first.client.deploy(project)
        body = {"workers": 4, "item_list": {"items": list(range(40)), "batch_size": 1}}
        job_id = first.client.submit("slow", body)["job_id"]

        def status(daemon: Daemon) -> dict[str, Any]:
            found: dict[str, Any] = daemon.client.get_job("slow", job_id)["job_status"]
            return found

        wait_for(
            lambda: status(second)["batch_metrics"]["succeeded"] >= 4, what="the job under way"
        )
        assert second.client.pause_job("slow", job_id)["status"] == "paused"
        wait_for(
            lambda: status(first)["batch_metrics"]["in_progress"] == 0,
            what="the batches in hand on both nodes to finish",
        )
        stopped_at = status(first)["batch_metrics"]["succeeded"]
        assert stopped_at < 40
        until = time.monotonic() + 2.5 * SCHEDULER_IDLE_INTERVAL
        while time.monotonic() < until:
            for daemon in (first, second):
                seen = status(daemon)
                assert seen["status"] == "paused"
                assert seen["batch_metrics"]["succeeded"] == stopped_at
                assert seen["batch_metrics"]["in_progress"] == 0
            assert len(calls.read_text().split()) == stopped_at
            time.sleep(0.05)

        assert first.client.resume_job("slow", job_id)["status"] == "running"
        final = wait_job(second.client, "slow", job_id)
        assert (final["status"], final["batch_metrics"]["succeeded"]) == ("succeeded", 40)
        assert sorted(r["result"] for r in first.client.results("slow", job_id)) == list(range(40))
        assert len(calls.read_text().split()) == 40
