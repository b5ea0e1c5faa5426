"""ONNX model APIs on a real daemon, under the model venv's onnxruntime (CPU): answers
checked value for value against the same model run directly (make_models.py)."""

from __future__ import annotations

import shutil
import sys
from typing import Any

import pytest

from batchd.client import BatchdError
from tests.conftest import Daemon, wait_job
from tests.models.conftest import ModelProject, Models

CLIENT_HANDLER = """
class Handler:
    def __init__(self, onnx_client):
        self.client = onnx_client

    def handle_batch(self, payload):
        answers = []
        for item in payload:
            try:
                outputs = self.client.predict(item["x"], item.get("model"), item.get("version"))
                answer = {name: value.tolist() for name, value in outputs.items()}
            except LookupError as exc:
                answer = {"error": str(exc)}
            answer["loaded"] = self.client.loaded()
            answers.append(answer)
        return {
            "answers": answers,
            "models": self.client.models,
            "versions": self.client.versions("linear"),
            "session": type(self.client.get_model("other")).__name__,
        }
"""


def flat(rows: Any) -> list[float]:
    return [value for row in rows for value in (flat(row) if isinstance(row, list) else [row])]


def close(actual: Any, expected: Any) -> bool:
    """Equal shapes, and values within float32 rounding."""
    same_shape = len(actual) == len(expected) and all(
        len(a) == len(e) for a, e in zip(actual, expected, strict=True)
    )
    return same_shape and flat(actual) == pytest.approx(flat(expected), rel=1e-5, abs=1e-6)


def run_job(daemon: Daemon, api: str, body: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """The job's final status and its batches' results, in batch order."""
    client = daemon.client
    job = client.submit(api, body)
    status = wait_job(client, api, job["job_id"])
    rows = sorted(client.results(api, job["job_id"]), key=lambda row: str(row["batch_id"]))
    return status, [row["result"] for row in rows]


def test_onnx_client_serves_models_by_name_and_version_and_evicts_by_cache_size(
    daemon: Daemon, model_project: ModelProject, model_python: str, onnx_models: Models
) -> None:
    """models.dir outside the project (read in place), cache_size 1: one model version
    loaded at a time, the least recently used evicted."""
    project = model_project(
        "onnxdir",
        "onnx",
        f'dir = "{onnx_models.root / "onnx"}"\ncache_size = 1',
        model_python,
        handler=CLIENT_HANDLER,
    )
    deployed = daemon.client.deploy(project)
    # Referenced, not uploaded: the project is batchd.toml and handler.py.
    assert deployed["files"] == 1
    x = onnx_models.inputs
    items = [
        {"model": "linear", "x": x},
        {"model": "linear", "version": 1, "x": x},
        {"model": "other", "x": x},
        {"model": "linear", "version": "2", "x": x},
        {"model": "nope", "x": x},
        {"model": "linear", "version": 9, "x": x},
    ]
    status, results = run_job(
        daemon, "onnxdir", {"workers": 1, "item_list": {"items": items, "batch_size": 6}}
    )
    assert status["status"] == "succeeded", status
    (result,) = results
    assert result["models"] == ["linear", "other"]
    assert result["versions"] == [1, 2]
    assert result["session"] == "InferenceSession"
    answers = result["answers"]
    for answer, key in zip(answers, ["linear/2", "linear/1", "other/1", "linear/2"], strict=False):
        assert close(answer["y"], onnx_models.answer(f"onnx/{key}")), key
        assert close(answer["prob"], onnx_models.answer(f"onnx/{key}", "prob")), key
    # cache_size = 1: only the model version used last is loaded.
    assert [answer["loaded"] for answer in answers[:4]] == [
        [["linear", 2]],
        [["linear", 1]],
        [["other", 1]],
        [["linear", 2]],
    ]
    assert answers[4]["error"] == "model 'nope' does not exist; this API serves ['linear', 'other']"
    assert answers[5]["error"] == "model 'linear' has no version 9; its versions are [1, 2]"


def test_onnx_builtin_handler_stacks_items_and_keeps_the_configured_outputs(
    daemon: Daemon, model_project: ModelProject, model_python: str, onnx_models: Models
) -> None:
    """No handler.py: the model inside the project (a relative path, uploaded with it);
    `outputs` from [handler.config], and a job's config wins."""
    model = (onnx_models.root / "onnx/linear/2/model.onnx").read_bytes()
    project = model_project(
        "onnxbuiltin",
        "onnx",
        'path = "model/model.onnx"',
        model_python,
        config='{outputs = "prob"}',
        files={"model/model.onnx": model},
    )
    daemon.client.deploy(project)
    x = onnx_models.inputs
    body = {"workers": 1, "item_list": {"items": x, "batch_size": 3}}
    status, results = run_job(daemon, "onnxbuiltin", body)
    assert status["status"] == "succeeded", status
    # One entry per item: the batches of 3 and 1 rows, in order.
    assert [len(result) for result in results] == [3, 1]
    assert close(results[0] + results[1], onnx_models.answer("onnx/linear/2", "prob"))

    status, results = run_job(daemon, "onnxbuiltin", {**body, "config": {"outputs": ["y", "prob"]}})
    assert status["status"] == "succeeded", status
    entries = results[0] + results[1]
    assert close([entry["y"] for entry in entries], onnx_models.answer("onnx/linear/2"))
    assert close([entry["prob"] for entry in entries], onnx_models.answer("onnx/linear/2", "prob"))


def test_a_model_that_breaks_at_load_is_a_worker_error_naming_its_path(
    daemon: Daemon, model_project: ModelProject, model_python: str, tmp_path: Any
) -> None:
    broken = tmp_path / "broken" / "model.onnx"
    broken.parent.mkdir()
    broken.write_bytes(b"this is no ONNX graph")
    project = model_project("onnxbroken", "onnx", f'path = "{broken.parent}"', model_python)
    daemon.client.deploy(project)
    status, _ = run_job(
        daemon, "onnxbroken", {"workers": 1, "item_list": {"items": [[1, 2, 3]], "batch_size": 1}}
    )
    assert status["status"] == "worker_error"
    assert f"onnx model '_cortex_default' version 1 at {broken} failed to load" in status["error"]


def test_a_gpu_api_whose_onnxruntime_has_no_cuda_fails_at_init(
    make_daemon: Any, model_project: ModelProject, model_python: str, onnx_models: Models
) -> None:
    """The daemon hands the worker a GPU ("gpus = [0]": this box has none to detect); the
    CPU-only onnxruntime cannot use it, and the worker refuses rather than run on the CPU."""
    daemon = make_daemon(gpus=[0])
    project = model_project(
        "onnxgpu",
        "onnx",
        f'path = "{onnx_models.root / "onnx/other"}"',
        model_python,
        extra="[compute]\ngpu = 1",
    )
    daemon.client.deploy(project)
    status, _ = run_job(
        daemon, "onnxgpu", {"workers": 1, "item_list": {"items": [[1, 2, 3]], "batch_size": 1}}
    )
    assert status["status"] == "worker_error"
    assert "the API asks for 1 GPU(s) ([compute] gpu), but this onnxruntime" in status["error"]
    assert "install onnxruntime-gpu" in status["error"]


def test_model_paths_are_checked_at_deploy(
    daemon: Daemon, model_project: ModelProject, model_python: str, onnx_models: Models
) -> None:
    """A path that holds no model is a 422 naming its setting; nothing is deployed."""

    def refused(name: str, runtime: str, models_toml: str) -> BatchdError:
        with pytest.raises(BatchdError) as caught:
            daemon.client.deploy(model_project(name, runtime, models_toml, model_python))
        assert caught.value.status == 422
        return caught.value

    missing = refused("missing", "onnx", 'path = "models/none.onnx"')
    assert missing.field == "handler.models.path"
    assert "'models/none.onnx' does not exist" in missing.message

    elsewhere = onnx_models.root / "nowhere"
    absent = refused("absent", "onnx", f'paths = [{{name = "a", path = "{elsewhere}"}}]')
    assert absent.field == "handler.models.paths.0.path"
    assert f"{str(elsewhere)!r} does not exist" in absent.message

    # An ONNX folder is no SavedModel.
    layout = refused("layout", "tensorflow", f'path = "{onnx_models.root / "onnx/linear"}"')
    assert layout.field == "handler.models.path"
    assert "version 1 does not hold a SavedModel (saved_model.pb)" in layout.message

    empty = onnx_models.root / "empty"
    empty.mkdir(exist_ok=True)
    no_models = refused("nomodels", "onnx", f'dir = "{empty}"')
    assert no_models.field == "handler.models.dir"
    assert "holds no onnx model folder (it is empty)" in no_models.message

    s3 = refused("s3", "onnx", 'path = "s3://bucket/model"')
    assert s3.field == "handler.models.path"
    assert "s3:// is not yet" in s3.message

    outside = refused("outside", "onnx", 'path = "../model.onnx"')
    assert "leaves the project" in outside.message
    assert daemon.client.list_apis() == []
    shutil.rmtree(empty)


def test_a_model_api_under_an_interpreter_without_its_runtime_says_so(
    daemon: Daemon, model_project: ModelProject
) -> None:
    """The daemon's own interpreter has no onnxruntime (nor needs the model venv)."""
    project = model_project(
        "noruntime",
        "onnx",
        'path = "model.onnx"',
        sys.executable,
        files={"model.onnx": b"never read"},
    )
    daemon.client.deploy(project)
    status, _ = run_job(
        daemon, "noruntime", {"workers": 1, "item_list": {"items": [[1]], "batch_size": 1}}
    )
    assert status["status"] == "worker_error"
    assert (
        f"this onnx API needs onnxruntime in its interpreter, {sys.executable}, which lacks it"
        in status["error"]
    )
