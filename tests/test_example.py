"""The bundled example API, end to end, as the README shows it."""

from __future__ import annotations

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
