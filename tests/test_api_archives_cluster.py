"""Several daemons on one PostgreSQL database: an API deployed on one node runs on another,
which unpacks the version's project from the database on first use and checks it against
the digest the version was deployed with. A project that does not match is refused.

The deploying node is stopped before the job is submitted, so that the other node is the
one that runs it (nodes sharing a database adopt each other's jobs)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from batchd.packing import pack_project
from tests import pg
from tests.conftest import Daemon, wait_job

Project = Callable[..., Path]

# Reads a file of the project and a variable of its .env: both must come with it.
HANDLER = """
import os

class Handler:
    def __init__(self, config):
        with open("words/suffix.txt") as data:
            self.suffix = data.read().strip()

    def handle_batch(self, payload, batch_id):
        return f"{payload[0]}-{self.suffix}-{os.environ['GREETING']}"
"""

OTHER_HANDLER = """
class Handler:
    def __init__(self, config):
        pass

    def handle_batch(self, payload, batch_id):
        return "not the deployed project"
"""


@pytest.fixture
def dsn(postgres_cluster: pg.Cluster) -> Iterator[str]:
    with postgres_cluster.fresh_schema() as fresh:
        yield fresh


def _sql(dsn: str, statement: str, *params: object) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(statement, *params)
        finally:
            await conn.close()

    asyncio.run(run())


def _two_nodes(make_daemon: Callable[..., Daemon], dsn: str) -> tuple[Daemon, Daemon]:
    return (
        make_daemon(database=dsn, node_name="node-a"),
        make_daemon(database=dsn, node_name="node-b"),
    )


def _project(make_project: Project) -> Path:
    return make_project(
        "words",
        HANDLER,
        files={"words/suffix.txt": "stored\n", ".env": "GREETING=hello\n"},
    )


def _job(items: list[str]) -> dict[str, object]:
    return {"workers": 2, "item_list": {"items": items, "batch_size": 1}}


def _snapshots(daemon: Daemon, api: str) -> list[Path]:
    folder = daemon.state_dir / "apis" / api
    return sorted(folder.iterdir()) if folder.exists() else []


def test_a_job_on_another_node_runs_the_project_deployed_on_the_first(
    make_daemon: Callable[..., Daemon], make_project: Project, dsn: str
) -> None:
    node_a, node_b = _two_nodes(make_daemon, dsn)
    deployed = node_a.client.deploy(_project(make_project))
    assert deployed["version"] == 1
    (snapshot_a,) = _snapshots(node_a, "words")
    assert _snapshots(node_b, "words") == []
    node_a.stop()
    # Node B knows the API from the database, not from its own files.
    assert node_b.client.get_api("words")["version"] == 1

    job_id = node_b.client.submit("words", _job(["a", "b", "c"]))["job_id"]
    status = wait_job(node_b.client, "words", job_id)
    assert status["status"] == "succeeded", status
    results = sorted((r["batch_id"], r["result"]) for r in node_b.client.results("words", job_id))
    assert results == [
        (f"{job_id}-{n}", f"{x}-stored-hello") for n, x in ((1, "a"), (2, "b"), (3, "c"))
    ]

    # The same snapshot, by name and by content, now on node B too; no half-unpacked leftovers.
    (snapshot_b,) = _snapshots(node_b, "words")
    assert snapshot_b.name == snapshot_a.name
    for relpath in ("handler.py", "words/suffix.txt"):
        assert (snapshot_b / relpath).read_bytes() == (snapshot_a / relpath).read_bytes()
    assert not any((node_b.state_dir / "apis" / ".incoming").glob("*"))

    # A second job uses the snapshot in place.
    again = node_b.client.submit("words", _job(["d"]))["job_id"]
    assert wait_job(node_b.client, "words", again)["status"] == "succeeded"
    assert [r["result"] for r in node_b.client.results("words", again)] == ["d-stored-hello"]
    assert _snapshots(node_b, "words") == [snapshot_b]


def test_a_stored_archive_that_does_not_match_its_digest_is_never_run(
    make_daemon: Callable[..., Daemon], make_project: Project, dsn: str, tmp_path: Path
) -> None:
    node_a, node_b = _two_nodes(make_daemon, dsn)
    node_a.client.deploy(_project(make_project))
    node_a.stop()
    # Another valid project of the same name in place of the stored archive: it unpacks
    # cleanly, and would run, but it is not what version 1 was deployed as.
    other = pack_project(make_project("words", OTHER_HANDLER))
    _sql(dsn, "UPDATE api_archives SET archive = $1 WHERE name = 'words'", other)

    job_id = node_b.client.submit("words", _job(["a", "b"]))["job_id"]
    status = wait_job(node_b.client, "words", job_id)
    assert status["status"] == "worker_error", status
    assert status["error"] == (
        "the stored archive of API words version 1 does not match the digest it was "
        "deployed with: refusing to run it (deploy the project again)"
    )
    assert list(node_b.client.results("words", job_id)) == []
    assert _snapshots(node_b, "words") == []
    assert not any((node_b.state_dir / "apis" / ".incoming").glob("*"))

    # Node A has its own snapshot, checked when deployed: it still runs that version.
    node_b.stop()
    node_a.start()
    on_a = node_a.client.submit("words", _job(["x"]))["job_id"]
    assert wait_job(node_a.client, "words", on_a)["status"] == "succeeded"
    assert [r["result"] for r in node_a.client.results("words", on_a)] == ["x-stored-hello"]


def test_a_version_without_a_stored_archive_is_refused_by_name(
    make_daemon: Callable[..., Daemon], make_project: Project, dsn: str
) -> None:
    node_a, node_b = _two_nodes(make_daemon, dsn)
    node_a.client.deploy(_project(make_project))
    node_a.stop()
    _sql(dsn, "DELETE FROM api_archives")

    job_id = node_b.client.submit("words", _job(["a"]))["job_id"]
    status = wait_job(node_b.client, "words", job_id)
    assert status["status"] == "worker_error", status
    assert status["error"] == (
        "the project of API words version 1 is not on this node, and the database holds "
        "no archive of it"
    )


async def test_two_first_uses_at_once_on_one_node_unpack_it_once(
    make_project: Project, dsn: str, tmp_path: Path
) -> None:
    from batchd.apis.registry import ApiRegistry
    from batchd.config import DaemonConfig
    from batchd.store.postgres.store import PostgresStore

    store = PostgresStore(dsn)
    await store.open()
    try:
        node_a = ApiRegistry(DaemonConfig(state_dir=str(tmp_path / "a")), store)
        node_b = ApiRegistry(DaemonConfig(state_dir=str(tmp_path / "b")), store)
        archive = await asyncio.to_thread(pack_project, _project(make_project))
        (deployed,) = await node_a.deploy(archive, check=False)
        api = deployed.record
        assert deployed.new
        # Both find the folder missing and wait for the API's lock: the second must find
        # the first's snapshot, not unpack again onto it.
        one, two = await asyncio.gather(node_b.snapshot_here(api), node_b.snapshot_here(api))
        assert one == two == node_b.snapshot_dir(api)
        assert (one / "words" / "suffix.txt").read_text() == "stored\n"
        assert one.name == node_a.snapshot_dir(api).name
        assert not any((tmp_path / "b" / "apis" / ".incoming").glob("*"))
    finally:
        await store.close()


async def test_a_first_use_does_not_wait_for_a_deploy_of_the_same_api(
    make_project: Project, dsn: str, tmp_path: Path
) -> None:
    from batchd.apis.registry import ApiRegistry
    from batchd.config import DaemonConfig
    from batchd.store.postgres.store import PostgresStore

    started, gate = tmp_path / "check-started", tmp_path / "gate"
    # Imported by the deploy's handler check: holds the check until the gate opens.
    held = HANDLER + (
        f"\nimport pathlib, time\npathlib.Path({str(started)!r}).touch()\n"
        f"while not pathlib.Path({str(gate)!r}).exists():\n    time.sleep(0.02)\n"
    )
    store = PostgresStore(dsn)
    await store.open()
    try:
        node_a = ApiRegistry(DaemonConfig(state_dir=str(tmp_path / "a")), store)
        node_b = ApiRegistry(DaemonConfig(state_dir=str(tmp_path / "b")), store)
        first = await asyncio.to_thread(pack_project, _project(make_project))
        api = (await node_a.deploy(first, check=False))[0].record
        second = await asyncio.to_thread(
            pack_project,
            make_project("words", held, files={"words/suffix.txt": "v2\n", ".env": "A=1\n"}),
        )
        deploying = asyncio.create_task(node_b.deploy(second))
        while not started.exists():
            assert not deploying.done(), deploying.result()
            await asyncio.sleep(0.02)
        # The deploy holds the API's lock in its handler check; version 1 starts anyway.
        folder = await asyncio.wait_for(node_b.snapshot_here(api), 30)
        assert (folder / "words" / "suffix.txt").read_text() == "stored\n"
        assert not deploying.done()
        gate.touch()
        (deployed,) = await deploying
        assert (deployed.record.version, deployed.new) == (2, True)
    finally:
        gate.touch()
        await store.close()
