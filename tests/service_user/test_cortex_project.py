"""A Cortex project deployed to the daemon running as its service user: the service user
builds the API's venv (Cortex's boto3 with it), and the handler writes to S3 as on Cortex."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_job
from tests.cortex.test_cortex_projects import copy_project, s3_json
from tests.service_user.conftest import ServiceBox, owners

pytestmark = pytest.mark.timeout(600)


def test_the_sum_project_runs_as_the_service_user(
    service_box: ServiceBox, s3_server: Any, tmp_path: Path
) -> None:
    s3 = s3_server.client()
    s3.create_bucket(Bucket="sums-svc")
    project = copy_project("sum", tmp_path, s3_server.env)
    daemon = service_box.daemon()
    deployed = daemon.client.deploy(project)
    assert any("compute.cpu" in warning for warning in deployed["warnings"])

    # The venv was built by the service user, in its own state dir.
    venvs = daemon.state_dir / "venvs"
    built = [path for path in venvs.iterdir() if (path / "batchd-venv.json").exists()]
    assert len(built) == 1
    foreign = {path: uid for path, uid in owners(venvs).items() if uid != service_box.user.uid}
    assert foreign == {}

    numbers = [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, -10, 0]]
    job = daemon.client.submit(
        "summing-api",
        {
            "workers": 1,
            "item_list": {"items": numbers, "batch_size": 3},
            "config": {"dest_s3_dir": "s3://sums-svc/out"},
        },
    )
    status = wait_job(daemon.client, "summing-api", job["job_id"], timeout=300)
    assert status["status"] == "succeeded", status.get("error")
    # The daemon's own venv has no boto3: the handler imported the API venv's.
    assert s3_json(s3, "sums-svc", f"out/{job['job_id']}.json") == [6, 15, 24, 0]
