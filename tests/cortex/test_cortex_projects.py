"""Cortex's own Batch example projects, deployed and run unchanged.

The projects under ``projects/`` are laid out after Cortex v0.35's ``test/apis/batch/sum``
and ``onnx``: a ``cortex.yaml`` (with keys batchd ignores), handlers that use boto3, a
``requirements.txt``, ``on_job_complete`` writing to S3. The only thing a test adds is an
``.env`` pointing boto3 at the local S3 server, as a user would point it at their MinIO.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import REPO, Daemon, wait_job

PROJECTS = Path(__file__).parent / "projects"

# A linear classifier over 4 features into 3 classes: scores = x @ WEIGHTS + BIAS.
WEIGHTS = [[1.0, 0.0, -1.0], [0.5, 2.0, 0.0], [-1.0, 1.0, 3.0], [0.0, -0.5, 1.5]]
BIAS = [0.1, -0.2, 0.05]
LABELS = ["cat", "dog", "bird"]

BUILD_MODEL = """
import sys
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

weights = np.array({weights}, dtype=np.float32)
bias = np.array({bias}, dtype=np.float32)
graph = helper.make_graph(
    [helper.make_node("Gemm", ["images", "W", "B"], ["scores"])],
    "linear",
    [helper.make_tensor_value_info("images", TensorProto.FLOAT, [None, 4])],
    [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 3])],
    [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "B")],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, sys.argv[1])
"""


def expected_class(features: list[float]) -> str:
    scores = [
        sum(x * WEIGHTS[row][col] for row, x in enumerate(features)) + BIAS[col] for col in range(3)
    ]
    return LABELS[scores.index(max(scores))]


def copy_project(name: str, dest: Path, s3_env: dict[str, str]) -> Path:
    """The project as a user has it, plus the .env that points boto3 at local S3."""
    root = dest / name
    shutil.copytree(PROJECTS / name, root)
    (root / ".env").write_text("".join(f"{key}={value}\n" for key, value in s3_env.items()))
    return root


def start_daemon(make_daemon: Callable[..., Daemon], s3_server: Any, venv_dir: Path) -> Daemon:
    """A daemon that reads s3:// inputs from the local server and shares the session's venvs."""
    daemon = make_daemon(start=False, s3=s3_server.config, deploy={"venv_dir": str(venv_dir)})
    daemon.env.update(s3_server.env)
    daemon.start()
    return daemon


def deploy_with_cli(daemon: Daemon, project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batchd", "deploy", str(project), "--url", daemon.url],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        cwd=REPO,
    )


def s3_json(s3: Any, bucket: str, key: str) -> Any:
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def test_sum_project_deploys_and_runs_unchanged(
    make_daemon: Callable[..., Daemon], s3_server: Any, shared_venv_dir: Path, tmp_path: Path
) -> None:
    s3 = s3_server.client()
    s3.create_bucket(Bucket="sums")
    s3.create_bucket(Bucket="numbers")
    sample = json.loads((PROJECTS / "sum" / "sample.json").read_text())
    # The same lists as delimited files in S3: two to read, one the excludes leave out.
    s3.put_object(Bucket="numbers", Key="in/part-0.json", Body="\n".join(map(json.dumps, sample)))
    s3.put_object(Bucket="numbers", Key="in/part-1.json", Body=json.dumps([100, 1]))
    s3.put_object(Bucket="numbers", Key="in/skip.gif", Body="not json")

    project = copy_project("sum", tmp_path, s3_server.env)
    daemon = start_daemon(make_daemon, s3_server, shared_venv_dir)
    deployed = deploy_with_cli(daemon, project)
    assert deployed.returncode == 0, deployed.stderr
    assert "summing-api" in deployed.stdout
    # compute.cpu means nothing on one box: said, not refused.
    assert "compute.cpu" in deployed.stderr

    api = daemon.client.get_api("summing-api")
    # 200Mi, as Kubernetes reads it.
    assert api["compute"]["mem"] == "209715200"

    items = {"item_list": {"items": sample, "batch_size": 2}}
    job = daemon.client.submit(
        "summing-api", {"workers": 1, **items, "config": {"dest_s3_dir": "s3://sums/out"}}
    )
    assert wait_job(daemon.client, "summing-api", job["job_id"])["status"] == "succeeded"
    assert s3_json(s3, "sums", f"out/{job['job_id']}.json") == [sum(x) for x in sample]

    files = {
        "delimited_files": {
            "s3_paths": ["s3://numbers/in/"],
            "includes": ["**.json"],
            "batch_size": 2,
        }
    }
    job = daemon.client.submit(
        "summing-api", {"workers": 1, **files, "config": {"dest_s3_dir": "s3://sums/files"}}
    )
    assert wait_job(daemon.client, "summing-api", job["job_id"])["status"] == "succeeded"
    assert s3_json(s3, "sums", f"files/{job['job_id']}.json") == [
        *(sum(x) for x in sample),
        101,
    ]

    # Cortex's handler raised in __init__ without dest_s3_dir: the job says why.
    job = daemon.client.submit("summing-api", {"workers": 1, **items})
    failed = wait_job(daemon.client, "summing-api", job["job_id"])
    assert failed["status"] == "worker_error"
    assert "'dest_s3_dir' field was not provided" in failed["error"]


def test_classifier_project_with_requirements_metrics_and_cortex_modules(
    make_daemon: Callable[..., Daemon],
    s3_server: Any,
    shared_venv_dir: Path,
    model_python: str,
    tmp_path: Path,
) -> None:
    s3 = s3_server.client()
    for bucket in ("cortex-models", "images", "predictions"):
        s3.create_bucket(Bucket=bucket)
    model = tmp_path / "model.onnx"
    script = BUILD_MODEL.format(weights=WEIGHTS, bias=BIAS)
    subprocess.run([model_python, "-c", script, str(model)], check=True, timeout=120)
    s3.put_object(Bucket="cortex-models", Key="classifier/model.onnx", Body=model.read_bytes())
    images = {f"photos/img_{i:03d}.json": [i % 3, (i * 7) % 5, -i / 4, 1.0] for i in range(7)}
    for key, features in images.items():
        s3.put_object(Bucket="images", Key=key, Body=json.dumps(features))
    # Left out by the S3 prefix (not img_*) and by the exclude.
    s3.put_object(Bucket="images", Key="photos/other_001.json", Body=json.dumps([9, 9, 9, 9]))
    s3.put_object(Bucket="images", Key="photos/img_999.gif", Body=b"GIF89a")

    project = copy_project("classifier", tmp_path, s3_server.env)
    # Over the 32 MiB project limit unless .cortexignore leaves it out.
    (project / "weights.bin").write_bytes(b"\0" * (40 * 1024 * 1024))
    daemon = start_daemon(make_daemon, s3_server, shared_venv_dir)
    deployed = deploy_with_cli(daemon, project)
    assert deployed.returncode == 0, deployed.stderr
    for ignored in ("compute.cpu", "networking", "handler.log_level", "handler.shm_size"):
        assert ignored in deployed.stderr

    job = daemon.client.submit(
        "image-classifier",
        {
            "workers": 2,
            "file_path_lister": {
                "s3_paths": ["s3://images/photos/img"],
                "excludes": ["**.gif"],
                "batch_size": 3,
            },
            "config": {"dest_s3_dir": "s3://predictions/runs"},
        },
    )
    status = wait_job(daemon.client, "image-classifier", job["job_id"], timeout=300)
    assert status["status"] == "succeeded", status.get("error")
    assert status["total_batch_count"] == 3

    listed = s3.list_objects_v2(Bucket="predictions", Prefix=f"runs/{job['job_id']}/")
    keys = sorted(entry["Key"] for entry in listed.get("Contents", []))
    assert len(keys) == 4  # three batches and done.json
    predictions = {}
    for key in keys:
        if not key.endswith("/done.json"):
            for result in s3_json(s3, "predictions", key):
                predictions[result["url"]] = result["class"]
    assert predictions == {
        f"s3://images/{key}": expected_class(features) for key, features in images.items()
    }
    assert "classified_by_last_worker" in s3_json(
        s3, "predictions", f"runs/{job['job_id']}/done.json"
    )

    with urllib.request.urlopen(f"{daemon.url}/metrics", timeout=30) as answer:
        metrics = answer.read().decode()
    classified = [
        line
        for line in metrics.splitlines()
        if line.startswith("batchd_handler_images_classified")
        and 'api_name="image-classifier"' in line
        and 'model="linear"' in line
    ]
    assert classified and float(classified[0].rsplit(" ", 1)[1]) == len(images)

    messages = [
        record.get("message", "")
        for record in daemon.client.stream_job_logs("image-classifier", job["job_id"])
    ]
    assert sum("classified 3 images in batch" in message for message in messages) == 2
