"""A daemon on PostgreSQL while its server goes down mid-job and comes back on the same
port: requests meanwhile get 503 with Retry-After, the workers' outcomes wait in the
daemon and are stored once the server is back, and the job ends with every batch
succeeded once. The cluster is this module's own: the session's is shared."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from tests import pg
from tests.conftest import Daemon, wait_for, wait_job

Project = Callable[..., Path]

# A line when a batch starts and one when it ends, so the test can tell how often each
# batch really ran; while the gate file exists a batch waits after it started.
GATED_HANDLER = """
import os, time

class Handler:
    def __init__(self, config):
        self.started, self.ended = os.environ["STARTED"], os.environ["ENDED"]
        self.gate = os.environ["GATE"]

    def handle_batch(self, payload, batch_id):
        with open(self.started, "a") as started:
            started.write(batch_id + "\\n")
        while os.path.exists(self.gate):
            time.sleep(0.01)
        time.sleep(0.02)
        with open(self.ended, "a") as ended:
            ended.write(batch_id + "\\n")
        return [item * 2 for item in payload]
"""
BATCHES = 80
MAX_RECEIVE_COUNT = 3


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[pg.Cluster]:
    with pg.cluster() as cluster:
        yield cluster


def get(url: str) -> tuple[int, Message, Any]:
    """Status, headers and JSON body of a GET, whatever its status."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.headers, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, json.loads(exc.read())


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


class GatedJob:
    """A job of BATCHES one-item batches on two workers, on a daemon whose queue is in a
    fresh schema of `cluster`, held with both workers inside a batch at the gate."""

    def __init__(self, daemon: Daemon, tmp_path: Path, project: Path) -> None:
        self.daemon = daemon
        self.started, self.ended = tmp_path / "started", tmp_path / "ended"
        self.gate = tmp_path / "gate"
        daemon.client.deploy(project)
        job = daemon.client.submit(
            "counted",
            {
                "workers": 2,
                "item_list": {"items": list(range(BATCHES)), "batch_size": 1},
                "sqs_dead_letter_queue": {"arn": "x", "max_receive_count": MAX_RECEIVE_COUNT},
            },
        )
        self.job_id: str = job["job_id"]
        wait_for(lambda: len(lines(self.ended)) >= 10, what="the job to be under way")
        self.gate.touch()
        wait_for(
            lambda: len(lines(self.started)) - len(lines(self.ended)) == 2,
            what="both workers to hold a batch at the gate",
        )

    def release_held(self) -> None:
        """Let the held batches end, and wait until they have."""
        self.gate.unlink()
        wait_for(
            lambda: len(lines(self.ended)) == len(lines(self.started)),
            what="the held batches to end",
        )

    def assert_every_batch_succeeded_once(self) -> dict[str, int]:
        """The job's counts, once it has succeeded with every result; each batch ran at
        most max_receive_count times, and again only where an attempt was charged."""
        client, job_id = self.daemon.client, self.job_id
        final = wait_job(client, "counted", job_id, timeout=120)
        assert final["status"] == "succeeded"
        counts: dict[str, int] = final["batch_metrics"]
        assert (counts["succeeded"], counts["failed"]) == (BATCHES, 0)
        results = {r["batch_id"]: r["result"] for r in client.results("counted", job_id)}
        assert results == {f"{job_id}-{i + 1}": [i * 2] for i in range(BATCHES)}
        ran = lines(self.started)
        assert set(ran) == set(results)
        assert max(ran.count(batch) for batch in set(ran)) <= MAX_RECEIVE_COUNT
        assert len(ran) - len(set(ran)) <= counts["failed_attempts"]
        return counts


@pytest.fixture
def gated_job(
    request: pytest.FixtureRequest,
    make_daemon: Callable[..., Daemon],
    make_project: Project,
    own_cluster: pg.Cluster,
    tmp_path: Path,
) -> Iterator[GatedJob]:
    names = ("started", "ended", "gate")
    env = "".join(f'{name.upper()} = "{tmp_path / name}"\n' for name in names)
    project = make_project("counted", GATED_HANDLER, extra_toml=f"[handler.env]\n{env}")
    with own_cluster.fresh_schema() as dsn:
        # Leases outlive the outages (unless a test says otherwise): a batch reruns only
        # where an attempt was charged.
        daemon = make_daemon(database=dsn, lease_timeout=getattr(request, "param", 10.0))
        yield GatedJob(daemon, tmp_path, project)
        daemon.close()


def test_a_postgresql_restart_mid_job_loses_and_repeats_nothing(
    gated_job: GatedJob, own_cluster: pg.Cluster
) -> None:
    daemon = gated_job.daemon
    own_cluster.shut_down()
    try:
        status, headers, body = get(f"{daemon.url}/batch/counted?jobID={gated_job.job_id}")
        assert status == 503
        assert body == {"error": {"message": "the queue's database is unavailable; retry shortly"}}
        assert 1 <= int(headers["Retry-After"]) <= 10
        health, health_headers, _ = get(f"{daemon.url}/healthz")
        assert health == 503
        assert int(health_headers["Retry-After"]) >= 1
        # The held batches end and are reported while the server is down: their outcomes
        # wait in the daemon (no worker gets more: leasing needs the server).
        gated_job.release_held()
        # Outlasting a pass of the cluster's loop (heartbeat, sweep, job sync).
        wait_for(
            lambda: "cannot reach the shared queue" in daemon.output(),
            what="the cluster's loop to find the database down",
        )
    finally:
        own_cluster.serve()

    counts = gated_job.assert_every_batch_succeeded_once()
    # Held through the outage and stored after it: no batch ran twice.
    assert len(lines(gated_job.started)) == BATCHES, counts
    health, _, body = get(f"{daemon.url}/healthz")
    assert (health, body) == (200, {"status": "ok"})
    output = daemon.output()
    # One warning for the outage, one line for its end, and no tracebacks.
    assert output.count("the database is unavailable") == 1, output
    assert output.count("connected to the database again") == 1, output
    assert output.count("cannot listen for job changes") <= 1, output
    assert "Traceback" not in output, output


def test_a_daemon_stopped_while_postgresql_is_down_exits_and_resumes_the_job(
    gated_job: GatedJob, own_cluster: pg.Cluster
) -> None:
    daemon = gated_job.daemon
    own_cluster.shut_down()
    try:
        ended_before = len(lines(gated_job.ended))
        gated_job.release_held()
        # What the workers reported cannot be stored: the daemon stops all the same.
        assert daemon.stop() == 0
    finally:
        own_cluster.serve()
    output = daemon.output()
    assert "Traceback" not in output, output
    assert "batchd stopped" in output
    unstored = len(lines(gated_job.started)) - ended_before
    assert unstored >= 2
    # The next start charges the leases that were held (the batches whose outcomes were
    # not stored, and any granted but not started), and runs those batches again.
    daemon.start()
    counts = gated_job.assert_every_batch_succeeded_once()
    assert counts["failed_attempts"] >= unstored
    assert len(lines(gated_job.started)) >= BATCHES + unstored


LEASE_TIMEOUT = 3.0


@pytest.mark.parametrize("gated_job", [LEASE_TIMEOUT], indirect=True)
def test_outcomes_held_through_an_outage_longer_than_their_leases_are_stored(
    gated_job: GatedJob, own_cluster: pg.Cluster
) -> None:
    own_cluster.shut_down()
    try:
        gated_job.release_held()
        # The outage itself, longer than a lease (this is what is tested, not a wait for
        # something to happen): the held outcomes' leases are past their expiry.
        time.sleep(LEASE_TIMEOUT + 1)
    finally:
        own_cluster.serve()
    counts = gated_job.assert_every_batch_succeeded_once()
    # Renewed while held, not expired and refused: stored once, none ran again.
    assert counts["failed_attempts"] == 0
    assert len(lines(gated_job.started)) == BATCHES
