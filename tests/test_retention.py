"""Pruning thousands of finished jobs gives the disk back and leaves running jobs alone."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batchd.client import BatchdError
from batchd.constants import DB_FILENAME
from batchd.observe.retention import disk_usage
from batchd.pool.workspace import remove_tree
from batchd.store.records import JobStatus, NewJob, Success, new_job_id
from batchd.store.sqlite.store import SqliteStore
from tests.conftest import EXAMPLE, Daemon, wait_for

OLD_JOBS = 2000
BATCHES_PER_JOB = 20


async def fill(state: Path) -> list[str]:
    # Filling, not what is tested: no fsync per transaction.
    store = SqliteStore(state / DB_FILENAME, synchronous="off")
    await store.open()
    ids = []
    payload = json.dumps(["x" * 200]).encode()
    for _ in range(OLD_JOBS):
        job = NewJob(new_job_id(), "hello", 1, "item_list", 1, {}, None, 3, 0, time.time())
        await store.create_job(job, [payload] * BATCHES_PER_JOB)
        # Run every batch, so each has its row (a batch gets one when first leased).
        await store.set_status(job.job_id, JobStatus.RUNNING)
        leases = await store.lease(job.job_id, BATCHES_PER_JOB, 60)
        await store.succeed(
            job.job_id, [Success(lease.seq, lease.token, 0.1, None) for lease in leases]
        )
        await store.set_status(job.job_id, JobStatus.SUCCEEDED)
        ids.append(job.job_id)
    await store.close()
    # Make them old: ended 100 days ago.
    with sqlite3.connect(state / DB_FILENAME) as conn:
        conn.execute("UPDATE jobs SET end_time = end_time - 100 * 86400")
    return ids


def post(daemon: Daemon, path: str) -> dict[str, Any]:
    request = urllib.request.Request(daemon.url + path, data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=300) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def get(daemon: Daemon, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(daemon.url + path, timeout=60) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def test_prune_old_jobs_reclaims_space_and_spares_running_ones(
    make_daemon: Callable[..., Daemon], make_project: Callable[..., Path], tmp_path: Path
) -> None:
    daemon = make_daemon(start=False)
    daemon.state_dir.mkdir(parents=True)
    old_ids = asyncio.run(fill(daemon.state_dir))
    daemon.start()
    client = daemon.client
    client.deploy(EXAMPLE)
    gate = tmp_path / "gate"
    client.deploy(
        make_project(
            "slow",
            f"""
            import os, time

            class Handler:
                def __init__(self, config):
                    pass

                def handle_batch(self, payload):
                    while not os.path.exists({str(gate)!r}):
                        time.sleep(0.01)
                    return payload
            """,
        )
    )
    running = client.submit("slow", {"item_list": {"items": [1, 2], "batch_size": 1}})
    before = get(daemon, "/status")["disk_usage"]

    planned = post(daemon, "/admin/prune?dryRun=true")
    assert planned["dry_run"] is True
    assert sorted(planned["jobs"]) == sorted(old_ids)
    assert planned["rows_deleted"] == 0
    assert len(list(client.results("hello", old_ids[0]))) == 0  # still there, just no results

    report = post(daemon, "/admin/prune")
    assert len(report["jobs"]) == OLD_JOBS
    # Each job's batches, and the chunk its payloads were admitted in.
    assert report["rows_deleted"] == OLD_JOBS * (BATCHES_PER_JOB + 1)
    after = get(daemon, "/status")["disk_usage"]
    assert after["database"] < before["database"] / 2, (before, after)

    # Pruned jobs keep their status; their batches are gone with a clear answer.
    status = client.get_job("hello", old_ids[0])["job_status"]
    assert status["status"] == "succeeded" and status["total_batch_count"] == BATCHES_PER_JOB
    try:
        list(client.results("hello", old_ids[0]))
    except BatchdError as exc:
        assert exc.status == 410 and "pruned" in exc.message
    else:
        raise AssertionError("expected 410 for a pruned job's results")

    # The running job was untouched and finishes.
    assert post(daemon, "/admin/prune")["jobs"] == []
    gate.touch()
    final = client.wait("slow", running["job_id"], poll_interval=0.05, timeout=60)
    assert final["status"] == "succeeded" and final["batch_metrics"]["succeeded"] == 2
    wait_for(lambda: len(list(client.results("slow", running["job_id"]))) == 2, what="results")
    with sqlite3.connect(daemon.state_dir / DB_FILENAME) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


async def fill_two_apis(state: Path) -> dict[str, list[str]]:
    store = SqliteStore(state / DB_FILENAME)
    await store.open()
    ids: dict[str, list[str]] = {"short": [], "hello": []}
    for api in ids:
        for _ in range(5):
            job = NewJob(new_job_id(), api, 1, "item_list", 1, {}, None, 3, 0, time.time())
            await store.create_job(job, [b"[1]"])
            await store.set_status(job.job_id, JobStatus.SUCCEEDED)
            ids[api].append(job.job_id)
    await store.close()
    with sqlite3.connect(state / DB_FILENAME) as conn:
        conn.execute("UPDATE jobs SET end_time = end_time - 2 * 86400")
    return ids


def test_an_api_can_keep_its_jobs_for_less_time(
    make_daemon: Callable[..., Daemon], make_project: Callable[..., Path]
) -> None:
    daemon = make_daemon(start=False)
    daemon.state_dir.mkdir(parents=True)
    ids = asyncio.run(fill_two_apis(daemon.state_dir))
    daemon.start()
    client = daemon.client
    client.deploy(EXAMPLE)
    short = make_project(
        "short",
        "class Handler:\n    def __init__(self, config): pass\n"
        "    def handle_batch(self, payload): pass\n",
        extra_toml="[retention]\ndays = 1\n",
    )
    assert client.deploy(short)["retention"] == {"days": 1.0}
    # Ended two days ago: past the API's 1 day, within the daemon's 30.
    report = post(daemon, "/admin/prune")
    assert sorted(report["jobs"]) == sorted(ids["short"])
    assert post(daemon, "/admin/prune?dryRun=true")["jobs"] == []


def test_disk_usage_counts_through_folders_removed_while_it_walks(tmp_path: Path) -> None:
    """/status walks the state dir while workers' workspaces come and go: a folder removed
    mid-walk is skipped, not raised (it was a 500 from /status as a stopped job's workers
    exited)."""
    state = tmp_path / "state"
    (state / "logs").mkdir(parents=True)
    (state / "logs" / "job.log").write_bytes(b"x" * 1000)
    (state / DB_FILENAME).write_bytes(b"d" * 4096)
    churning = threading.Event()
    stop = threading.Event()

    def churn() -> None:
        # Deep trees, so the walk is often inside one when it goes.
        while not stop.is_set():
            for n in range(8):
                deep = state / "workspaces" / f"w{n}" / "a" / "b" / "c"
                deep.mkdir(parents=True, exist_ok=True)
                (deep / "f").write_bytes(b"w" * 10)
            churning.set()
            shutil.rmtree(state / "workspaces", ignore_errors=True)

    churner = threading.Thread(target=churn)
    churner.start()
    try:
        assert churning.wait(30)
        for _ in range(2000):
            usage = disk_usage(state)
            # What stays put is counted exactly, whatever vanished beside it.
            assert usage["logs"] == 1000 and usage["database"] == 4096
            assert usage["total"] == 1000 + 4096 + usage["other"]
    finally:
        stop.set()
        churner.join()


def test_disk_usage_counts_a_tree_deeper_than_pythons_recursion_limit(tmp_path: Path) -> None:
    """A handler can nest folders in its workspace far deeper than Python's recursion limit
    (1,000): the walk behind /status counts them rather than raising RecursionError."""
    state = tmp_path / "state"
    state.mkdir()
    (state / DB_FILENAME).write_bytes(b"d" * 100)
    # 1,500 levels of one-letter folders: about 3,000 characters, within PATH_MAX.
    deep = str(state / "work")
    os.mkdir(deep)
    # One level at a time: Path.mkdir(parents=True) recurses too.
    for _ in range(1500):
        deep += "/d"
        os.mkdir(deep)
    Path(deep, "bottom").write_bytes(b"b" * 7)
    try:
        usage = disk_usage(state)
        assert (usage["database"], usage["other"], usage["total"]) == (100, 7, 107)
    finally:
        # pytest's own clean-up of tmp_path recurses too.
        assert remove_tree(state / "work")
