"""The bundled example API, end to end, as the README shows it."""

from __future__ import annotations

import pytest

from batchd.client import BatchdError
from tests.conftest import EXAMPLE, Daemon, wait_for, wait_job


def test_example_job_runs_to_completion(daemon: Daemon) -> None:
    client = daemon.client
    api = client.deploy(EXAMPLE)
    assert (api["name"], api["version"]) == ("hello", 1)

    job = client.submit(
        "hello", {"workers": 2, "item_list": {"items": [0, 1, 2, 3, 7], "batch_size": 2}}
    )
    assert job["total_batch_count"] == 3

    status = wait_job(client, "hello", job["job_id"])
    assert status["status"] == "succeeded"
    assert status["batch_metrics"]["succeeded"] == 3
    assert status["batch_metrics"]["failed"] == 0
    assert status["batches_in_queue"] == 0

    results = {r["batch_id"]: r["result"] for r in client.results("hello", job["job_id"])}
    assert results == {
        f"{job['job_id']}-1": ["hello zero!", "hello one!"],
        f"{job['job_id']}-2": ["hello two!", "hello three!"],
        f"{job['job_id']}-3": ["hello 7!"],
    }
    # on_job_complete ran once and saw the final metrics.
    wait_for(lambda: "batches succeeded" in daemon.job_log(job["job_id"]), what="hook output")
    assert daemon.job_log(job["job_id"]).count("done: 3 batches succeeded") == 1


def test_the_quick_starts_slow_job_can_be_stopped_by_hand(daemon: Daemon) -> None:
    """README "Stop a job": config.sleep makes each batch last that long, so a person has
    time to stop the job; a stop leaves the rest queued, and a second stop is refused."""
    client = daemon.client
    client.deploy(EXAMPLE)
    body = {"workers": 1, "item_list": {"items": list(range(20)), "batch_size": 1}}
    job = client.submit("hello", {**body, "config": {"sleep": 2}})
    job_id = job["job_id"]
    wait_for(
        lambda: client.get_job("hello", job_id)["job_status"]["batch_metrics"]["in_progress"],
        what="the first batch to start",
    )
    assert client.stop_job("hello", job_id) == {"message": f"stopped job {job_id}"}
    status = wait_job(client, "hello", job_id)
    assert status["status"] == "stopped"
    # 2 s a batch: the stop came long before the 20 batches could have run.
    assert status["batches_in_queue"] >= 15
    assert status["batch_metrics"]["succeeded"] <= 2
    with pytest.raises(BatchdError) as refused:
        client.stop_job("hello", job_id)
    assert (refused.value.status, refused.value.field) == (409, "jobID")
