"""Many identical deploys of one API at once make one version, not one each."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from batchd.client import Client
from tests.conftest import EXAMPLE, Daemon

DEPLOYS = 12


def test_concurrent_identical_deploys_make_one_version(daemon: Daemon) -> None:
    def deploy(_: int) -> dict[str, Any]:
        return Client(daemon.url, timeout=120).deploy(EXAMPLE)

    with ThreadPoolExecutor(DEPLOYS) as pool:
        answers = list(pool.map(deploy, range(DEPLOYS)))
    assert {answer["version"] for answer in answers} == {1}
    assert sorted(answer["unchanged"] for answer in answers) == [False] + [True] * (DEPLOYS - 1)
    detail = daemon.client.get_api("hello")
    assert [v["version"] for v in detail["versions"]] == [1]
    # One snapshot folder on disk, and no upload left half-way.
    snapshots = [p for p in (daemon.state_dir / "apis" / "hello").iterdir()]
    assert len(snapshots) == 1, snapshots
    assert list((daemon.state_dir / "apis" / ".incoming").iterdir()) == []
    # A changed project after them is the next version, as before.
    assert daemon.client.deploy(EXAMPLE)["unchanged"] is True
