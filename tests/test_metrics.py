"""GET /metrics against a real daemon: exact outcome counters by API, histograms that
agree with them, gauges of the current state, and no job or batch id in any label."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.conftest import EXAMPLE, Daemon, wait_for, wait_job

Project = Callable[..., Path]

TOKEN = "metrics-test-token-0123456789"
READ_TOKEN = "metrics-read-only-token-0123456789"

FLAKY = """
import os

class Handler:
    def handle_batch(self, payload):
        if payload == ["bad"]:
            raise ValueError("bad batch")
        if payload == ["crash"]:
            os._exit(17)
        if payload == ["memory"]:
            raise MemoryError
        return payload
"""

# Blocks until the file named by RELEASE exists.
BLOCKING = """
import os, time

class Handler:
    def handle_batch(self, payload):
        while not os.path.exists(os.environ["RELEASE"]):
            time.sleep(0.02)
        return payload
"""


def scrape(daemon: Daemon, token: str | None = None) -> list[Sample]:
    request = urllib.request.Request(daemon.url + "/metrics")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float | None:
    """The value of the one sample with this name whose labels include `labels`."""
    found = [s for s in samples if s.name == name and labels.items() <= s.labels.items()]
    assert len(found) <= 1, found
    return found[0].value if found else None


def by_label(samples: list[Sample], name: str, label: str) -> dict[str, float]:
    return {s.labels[label]: s.value for s in samples if s.name == name}


def test_outcome_counters_histograms_and_job_gauges_by_api(
    daemon: Daemon, make_project: Project
) -> None:
    client = daemon.client
    client.deploy(EXAMPLE)
    client.deploy(make_project("flaky", FLAKY))
    flaky = client.submit(
        "flaky",
        {
            "workers": 2,
            "max_receive_count": 2,
            "item_list": {"items": ["a", "bad", "b", "bad", "c"], "batch_size": 1},
        },
    )
    hello = client.submit("hello", {"item_list": {"items": [0, 1, 2, 3], "batch_size": 1}})
    assert wait_job(client, "flaky", flaky["job_id"])["status"] == "completed_with_failures"
    assert wait_job(client, "hello", hello["job_id"])["status"] == "succeeded"
    # Two workers die, one of them out of memory; both batches are dead-lettered at once.
    dying = client.submit(
        "flaky",
        {
            "workers": 1,
            "max_receive_count": 1,
            "item_list": {"items": ["crash", "memory"], "batch_size": 1},
        },
    )
    assert wait_job(client, "flaky", dying["job_id"])["status"] == "completed_with_failures"

    expected = {
        # "bad" twice, each delivered twice: 4 failed attempts, 2 redelivered, 2 dead;
        # then one crash and one MemoryError, each on its only delivery.
        ("batchd_batches_succeeded_total", "flaky"): 3,
        ("batchd_batches_failed_total", "flaky"): 6,
        ("batchd_batches_redelivered_total", "flaky"): 2,
        ("batchd_batches_dead_lettered_total", "flaky"): 4,
        ("batchd_worker_restarts_total", "flaky"): 2,
        ("batchd_worker_oom_kills_total", "flaky"): 1,
        ("batchd_lease_expiries_total", "flaky"): 0,
        ("batchd_batch_duration_seconds_count", "flaky"): 3,
        ("batchd_admission_seconds_count", "flaky"): 2,
        ("batchd_batches_succeeded_total", "hello"): 4,
        ("batchd_batches_failed_total", "hello"): 0,
        ("batchd_batches_dead_lettered_total", "hello"): 0,
        ("batchd_batches_redelivered_total", "hello"): 0,
        ("batchd_worker_restarts_total", "hello"): 0,
        ("batchd_batch_duration_seconds_count", "hello"): 4,
        ("batchd_admission_seconds_count", "hello"): 1,
    }

    def observed() -> dict[tuple[str, str], float | None]:
        samples = scrape(daemon)
        return {(name, api): value(samples, name, api=api) for name, api in expected}

    # Outcomes are counted as they are stored; the job status can be read a moment sooner.
    wait_for(lambda: observed() == expected, timeout=10, what=f"{expected}, got {observed()}")

    samples = scrape(daemon)
    for api, count in (("flaky", 3), ("hello", 4)):
        buckets = {
            s.labels["le"]: s.value
            for s in samples
            if s.name == "batchd_batch_duration_seconds_bucket" and s.labels["api"] == api
        }
        assert buckets["+Inf"] == count
        assert list(buckets.values()) == sorted(buckets.values())
        assert value(samples, "batchd_batch_duration_seconds_sum", api=api) is not None
    jobs = by_label(samples, "batchd_jobs", "status")
    assert jobs["succeeded"] == 1
    assert jobs["completed_with_failures"] == 2
    assert sum(jobs.values()) == 3
    assert (value(samples, "batchd_sqlite_commit_seconds_count") or 0) > 0
    assert value(samples, "batchd_info")
    # Nothing is queued or out with a worker once every job is done.
    assert not any(s.value for s in samples if s.name == "batchd_queue_depth")
    # Bounded labels: no job or batch ids anywhere.
    job_ids = {flaky["job_id"], hello["job_id"], dying["job_id"]}
    for sample in samples:
        assert not {"job_id", "jobID", "batch_id", "batchID"} & set(sample.labels), sample
        assert not any(job_id in v for v in sample.labels.values() for job_id in job_ids)


def test_queue_depth_and_workers_while_a_job_waits(
    make_daemon: Callable[..., Daemon], make_project: Project, tmp_path: Path
) -> None:
    daemon = make_daemon(max_workers=1, gpus=[0, 1])
    release = tmp_path / "release"
    client = daemon.client
    env = f'[handler.env]\nRELEASE = "{release}"\n'
    client.deploy(make_project("slow", BLOCKING, extra_toml=env + "[compute]\ngpu = 1\n"))
    running = client.submit("slow", {"item_list": {"items": [1], "batch_size": 1}})
    waiting = client.submit("slow", {"item_list": {"items": [1, 2, 3], "batch_size": 1}})

    def busy() -> list[Sample] | None:
        samples = scrape(daemon)
        leased = value(samples, "batchd_queue_depth", api="slow", state="leased")
        return samples if leased == 1 else None

    samples = wait_for(busy, what="the first job's batch to be leased")
    assert value(samples, "batchd_queue_depth", api="slow", state="queued") == 3
    assert value(samples, "batchd_workers", api="slow", state="running") == 1
    assert value(samples, "batchd_workers", api="slow", state="initializing") == 0
    assert by_label(samples, "batchd_gpu_workers", "gpu") == {"0": 1, "1": 0}
    assert value(samples, "batchd_max_workers") == 1
    jobs = by_label(samples, "batchd_jobs", "status")
    assert (jobs["running"], jobs["pending"], jobs["succeeded"]) == (1, 1, 0)

    release.touch()
    for job in (running, waiting):
        assert wait_job(client, "slow", job["job_id"])["status"] == "succeeded"
    samples = scrape(daemon)
    assert by_label(samples, "batchd_jobs", "status")["succeeded"] == 2
    assert value(samples, "batchd_batches_succeeded_total", api="slow") == 4
    assert not any(s.value for s in samples if s.name == "batchd_queue_depth")


def test_leases_held_by_a_killed_daemon_expire_at_startup(
    make_daemon: Callable[..., Daemon], make_project: Project, tmp_path: Path
) -> None:
    daemon = make_daemon()
    release = tmp_path / "release"
    client = daemon.client
    client.deploy(
        make_project("slow", BLOCKING, extra_toml=f'[handler.env]\nRELEASE = "{release}"\n')
    )
    job = client.submit("slow", {"item_list": {"items": [1], "batch_size": 1}})
    wait_for(
        lambda: value(scrape(daemon), "batchd_queue_depth", api="slow", state="leased") == 1,
        what="the batch to be leased",
    )
    daemon.kill()
    daemon.start()
    samples = scrape(daemon)
    assert value(samples, "batchd_lease_expiries_total", api="slow") == 1
    assert value(samples, "batchd_batches_failed_total", api="slow") == 1
    assert value(samples, "batchd_batches_redelivered_total", api="slow") == 1
    release.touch()
    assert wait_job(daemon.client, "slow", job["job_id"])["status"] == "succeeded"


def test_metrics_need_a_token_and_the_read_only_one_is_enough(
    make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    (tmp_path / "token").write_text(TOKEN)
    (tmp_path / "read-token").write_text(READ_TOKEN)
    daemon = make_daemon(
        token_file=str(tmp_path / "token"), read_only_token_file=str(tmp_path / "read-token")
    )
    try:
        scrape(daemon)
        raise AssertionError("GET /metrics answered without a token")
    except urllib.error.HTTPError as exc:
        assert exc.code == 401
    samples = scrape(daemon, READ_TOKEN)
    assert by_label(samples, "batchd_jobs", "status")["pending"] == 0
    assert value(samples, "batchd_info") == 1
