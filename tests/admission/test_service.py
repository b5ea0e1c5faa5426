"""The job service without HTTP: submit, retry, stop and delete against a real SQLite store,
a real registry and a scheduler that is never started (so no worker process runs)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from batchd.admission.service import Admission, DryRun
from batchd.apis.registry import ApiRegistry
from batchd.config import DaemonConfig
from batchd.constants import DB_FILENAME
from batchd.errors import BadRequest, Conflict, DomainError, Forbidden, Gone, Invalid, NotFound
from batchd.observe.joblogs import JobLogFiles
from batchd.observe.metrics import Metrics
from batchd.pool.process import WorkerLaunch
from batchd.scheduler.core import Scheduler
from batchd.store.records import Failure, JobRecord, JobStatus
from batchd.store.sqlite.store import SqliteStore

API = "demo"


def spec(gpu: int = 0, batch_timeout: float | None = None) -> dict[str, Any]:
    handler: dict[str, Any] = {"path": "handler.py"}
    if batch_timeout is not None:
        handler["batch_timeout"] = batch_timeout
    return {"handler": handler, "compute": {"gpu": gpu}}


async def never_launch(job: JobRecord, slot: int) -> WorkerLaunch:
    raise AssertionError("the scheduler is not started: no worker may launch")


async def never_init(job: JobRecord) -> dict[str, Any]:
    raise AssertionError("the scheduler is not started: no worker may launch")


class World:
    def __init__(self, tmp_path: Path, store: SqliteStore, **settings: Any) -> None:
        self.inputs = tmp_path / "inputs"
        self.inputs.mkdir(exist_ok=True)
        self.config = DaemonConfig(
            state_dir=str(tmp_path / "state"), input_roots=[str(self.inputs)], **settings
        )
        self.config.state_path.mkdir(exist_ok=True)
        self.store = store
        self.metrics = Metrics()
        self.registry = ApiRegistry(self.config, store)
        self.scheduler = Scheduler(
            self.config,
            store,
            never_launch,
            never_init,
            JobLogFiles(tmp_path / "logs"),
            gpus=[0],
            metrics=self.metrics,
        )
        self.admission = Admission(self.config, store, self.registry, self.scheduler, self.metrics)

    async def submit(self, body: dict[str, Any], dry_run: bool = False) -> JobRecord | DryRun:
        api = await self.registry.require(API)
        return await self.admission.submit(api, json.dumps(body).encode(), dry_run=dry_run)

    async def job(self, body: dict[str, Any]) -> JobRecord:
        job = await self.submit(body)
        assert isinstance(job, JobRecord)
        return job

    async def batches(self, job_id: str) -> list[Any]:
        """Every queued batch's items, by leasing them all."""
        leases = await self.store.lease(job_id, 1_000, 60.0)
        return [json.loads(lease.payload) for lease in leases]

    async def dead_letter_all(self, job_id: str) -> None:
        leases = await self.store.lease(job_id, 1_000, 60.0)
        for lease in leases:
            await self.store.fail(job_id, Failure(lease.seq, lease.token, "boom", None), 1)

    def admissions(self) -> float:
        count = self.metrics.registry.get_sample_value(
            "batchd_admission_seconds_count", {"api": API}
        )
        return count or 0.0


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / DB_FILENAME)
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def world(tmp_path: Path, store: SqliteStore) -> World:
    await store.add_api_version(API, spec(), {})
    return World(tmp_path, store)


def items(count: int, batch_size: int, **more: Any) -> dict[str, Any]:
    return {"item_list": {"items": list(range(count)), "batch_size": batch_size}, **more}


async def test_submit_stores_the_batches_and_admits_the_job(world: World) -> None:
    job = await world.job(items(5, 2, workers=4, priority=7))
    stored = await world.store.get_job(job.job_id)
    assert stored is not None
    assert (stored.api_name, stored.api_version, stored.kind) == (API, 1, "item_list")
    assert (stored.total_batch_count, stored.workers, stored.priority) == (3, 4, 7)
    assert stored.status is JobStatus.PENDING
    # The scheduler wants no more workers than there are batches.
    assert world.scheduler.worker_counts(job.job_id)["pending"] == 3
    assert world.admissions() == 1
    assert await world.store.set_status(job.job_id, JobStatus.RUNNING)
    assert await world.batches(job.job_id) == [[0, 1], [2, 3], [4]]


async def test_batch_timeout_comes_from_the_job_then_the_api_then_the_config(
    tmp_path: Path, store: SqliteStore
) -> None:
    await store.add_api_version(API, spec(batch_timeout=30.0), {})
    world = World(tmp_path, store, batch_timeout=90.0)
    assert (await world.job(items(1, 1, batch_timeout=5.0))).batch_timeout == 5.0
    assert (await world.job(items(1, 1))).batch_timeout == 30.0
    await store.add_api_version(API, spec(), {})
    assert (await world.job(items(1, 1))).batch_timeout == 90.0


async def test_dry_run_reports_and_stores_nothing(world: World) -> None:
    (world.inputs / "a.jsonl").write_text("1\n2\n3\n")
    body = {"delimited_files": {"paths": [str(world.inputs)], "batch_size": 2}}
    report = await world.submit(body, dry_run=True)
    assert report == DryRun(API, 2, 3, [str(world.inputs / "a.jsonl")])
    assert await world.store.list_jobs_page([API], 10) == []
    assert world.admissions() == 0


async def test_file_sources_are_stored_from_the_spool(world: World) -> None:
    (world.inputs / "a.jsonl").write_text('{"x": 1}\n\n{"x": 2}\n')
    (world.inputs / "b.txt").write_text("ignored")
    source = {"paths": [str(world.inputs)], "includes": ["**/*.jsonl"], "batch_size": 1}
    job = await world.job({"delimited_files": source})
    assert (job.kind, job.total_batch_count) == ("delimited_files", 2)
    assert await world.store.set_status(job.job_id, JobStatus.RUNNING)
    assert await world.batches(job.job_id) == [[{"x": 1}], [{"x": 2}]]


@pytest.mark.parametrize(
    ("body", "kind", "field"),
    [
        (b"[1]", BadRequest, None),
        (b"{", BadRequest, None),
        (json.dumps(items(3, 0)).encode(), Invalid, "item_list.batch_size"),
        (
            json.dumps({"file_path_lister": {"paths": ["/etc"], "batch_size": 1}}).encode(),
            Forbidden,
            "file_path_lister.paths[0]",
        ),
    ],
    ids=["not-an-object", "not-json", "batch-size-0", "outside-input-roots"],
)
async def test_submit_refuses_with_domain_errors(
    world: World, body: bytes, kind: type[DomainError], field: str | None
) -> None:
    api = await world.registry.require(API)
    with pytest.raises(kind) as refused:
        await world.admission.submit(api, body)
    assert refused.value.field == field
    assert await world.store.list_jobs_page([API], 10) == []
    assert world.admissions() == 0


async def test_submit_refuses_an_api_needing_more_gpus_than_the_machine_has(
    world: World,
) -> None:
    await world.store.add_api_version(API, spec(gpu=2), {})
    api = await world.registry.require(API)
    with pytest.raises(Invalid) as refused:
        world.admission.require_gpus(api)
    assert refused.value.field == "compute.gpu"
    assert refused.value.message == f"API {API} needs 2 GPU(s) per worker; this machine has 1"
    with pytest.raises(Invalid):
        await world.admission.submit(api, json.dumps(items(1, 1)).encode())
    assert await world.store.list_jobs_page([API], 10) == []


async def test_retry_makes_a_job_of_the_dead_letters_on_the_latest_version(world: World) -> None:
    settings = {"workers": 3, "config": {"k": "v"}, "priority": 2, "timeout": 600.0}
    original = await world.job(items(4, 2, batch_timeout=5.0, **settings))
    assert await world.store.set_status(original.job_id, JobStatus.RUNNING)
    await world.dead_letter_all(original.job_id)
    await world.store.add_api_version(API, spec(), {})
    retried = await world.admission.retry(API, original.job_id)
    assert retried.retry_of == original.job_id
    assert retried.job_id != original.job_id
    assert (retried.api_version, retried.total_batch_count) == (2, 2)
    assert (retried.workers, retried.config, retried.priority) == (3, {"k": "v"}, 2)
    assert (retried.kind, retried.max_receive_count) == ("item_list", original.max_receive_count)
    assert (retried.timeout, retried.batch_timeout) == (600.0, 5.0)
    assert world.scheduler.worker_counts(retried.job_id)["pending"] == 2
    assert world.admissions() == 2
    assert await world.store.set_status(retried.job_id, JobStatus.RUNNING)
    assert await world.batches(retried.job_id) == [[0, 1], [2, 3]]


async def test_retry_without_dead_letters_is_a_conflict(world: World) -> None:
    job = await world.job(items(2, 1))
    with pytest.raises(Conflict) as refused:
        await world.admission.retry(API, job.job_id)
    assert refused.value.field == "jobID"
    assert refused.value.message == f"job {job.job_id} has no dead-lettered batches"


async def test_retry_of_a_pruned_job_is_gone(world: World) -> None:
    job = await world.job(items(2, 1))
    assert await world.store.set_status(job.job_id, JobStatus.RUNNING)
    await world.dead_letter_all(job.job_id)
    assert await world.store.set_status(job.job_id, JobStatus.COMPLETED_WITH_FAILURES)
    await world.store.prune_job(job.job_id)
    with pytest.raises(Gone) as refused:
        await world.admission.retry(API, job.job_id)
    assert refused.value.field == "jobID"
    assert "were pruned on" in refused.value.message
    # A pruned job can still be found when its batches are not needed.
    assert (await world.admission.find_job(API, job.job_id)).job_id == job.job_id


async def test_jobs_are_found_only_under_their_own_api(world: World) -> None:
    await world.store.add_api_version("other", spec(), {})
    job = await world.job(items(1, 1))
    for api_name, job_id in [("other", job.job_id), (API, "no-such-job")]:
        with pytest.raises(NotFound) as refused:
            await world.admission.find_job(api_name, job_id)
        assert refused.value.field == "jobID"
        assert refused.value.message == f"job {job_id} not found for API {api_name}"
    with pytest.raises(NotFound):
        await world.admission.retry("other", job.job_id)
    with pytest.raises(NotFound):
        await world.admission.stop("other", job.job_id)


async def test_stop_ends_the_job_once(world: World) -> None:
    job = await world.job(items(3, 1))
    stopped = await world.admission.stop(API, job.job_id)
    assert stopped.job_id == job.job_id
    stored = await world.store.get_job(job.job_id)
    assert stored is not None and stored.status is JobStatus.STOPPED
    with pytest.raises(Conflict) as refused:
        await world.admission.stop(API, job.job_id)
    assert refused.value.message == f"job {job.job_id} has already ended (stopped)"


async def test_delete_api_stops_its_jobs_and_removes_it(world: World) -> None:
    first = await world.job(items(1, 1))
    second = await world.job(items(1, 1))
    await world.admission.stop(API, first.job_id)
    assert await world.admission.delete_api(API) == [second.job_id]
    stored = await world.store.get_job(second.job_id)
    assert stored is not None and stored.status is JobStatus.STOPPED
    assert stored.error == f"API {API} was deleted"
    with pytest.raises(NotFound) as refused:
        await world.registry.require(API)
    assert refused.value.field == "api"
    with pytest.raises(NotFound):
        await world.admission.delete_api(API)


def test_admission_imports_neither_http_nor_apis() -> None:
    """Admission stays below HTTP and beside apis: importing it loads neither aiohttp nor
    batchd.http nor batchd.apis (checked in a fresh interpreter)."""
    code = (
        "import sys, batchd.admission.service; print(sorted(m for m in sys.modules "
        "if m == 'aiohttp' or m.startswith(('batchd.http', 'batchd.apis'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
