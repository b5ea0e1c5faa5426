"""TensorFlow model APIs on a real daemon, under the model venv's tensorflow-cpu: answers
checked value for value against the same SavedModels run directly (make_models.py).
TensorFlow takes seconds to import: two worker starts in all."""

from __future__ import annotations

from typing import Any

from tests.conftest import Daemon
from tests.models.conftest import ModelProject, Models
from tests.models.test_models_onnx import close, run_job

CLIENT_HANDLER = """
class Handler:
    def __init__(self, tensorflow_client, config):
        self.client = tensorflow_client

    def handle_batch(self, payload):
        answers = []
        for item in payload:
            try:
                outputs = self.client.predict(
                    {"x": item["x"]}, item.get("model"), item.get("version")
                )
                answers.append({name: value.tolist() for name, value in outputs.items()})
            except (LookupError, ValueError) as exc:
                answers.append({"error": str(exc)})
        return {
            "answers": answers,
            "models": self.client.models,
            "versions": self.client.versions("linear"),
            "loaded": self.client.loaded(),
        }
"""


def test_tensorflow_client_runs_savedmodels_by_name_and_version(
    daemon: Daemon, model_project: ModelProject, model_python: str, tensorflow_models: Models
) -> None:
    linear = tensorflow_models.root / "tensorflow/linear"
    project = model_project(
        "tfpaths",
        "tensorflow",
        f'paths = [{{name = "linear", path = "{linear}", signature_key = "serving_default"}}, '
        f'{{name = "first", path = "{linear / "1"}"}}]',
        model_python,
        handler=CLIENT_HANDLER,
    )
    daemon.client.deploy(project)
    x = tensorflow_models.inputs
    items = [
        {"model": "linear", "x": x},
        {"model": "linear", "version": 1, "x": x},
        {"model": "linear", "version": "latest", "x": x},
        # A SavedModel folder without version folders is version 1.
        {"model": "first", "x": x},
        {"model": "linear", "version": 3, "x": x},
        {"model": "second", "x": x},
        {"model": "linear", "version": "newest", "x": x},
    ]
    status, results = run_job(
        daemon, "tfpaths", {"workers": 1, "item_list": {"items": items, "batch_size": 7}}
    )
    assert status["status"] == "succeeded", status
    (result,) = results
    assert result["models"] == ["first", "linear"]
    assert result["versions"] == [1, 2]
    # No cache_size: every version used stays loaded (the latest of each at the start).
    assert sorted(result["loaded"]) == [["first", 1], ["linear", 1], ["linear", 2]]
    answers = result["answers"]
    for answer, version in zip(answers, [2, 1, 2, 1], strict=False):
        assert list(answer) == ["y"]
        assert close(answer["y"], tensorflow_models.answer(f"tensorflow/linear/{version}"))
    assert answers[4:] == [
        {"error": "model 'linear' has no version 3; its versions are [1, 2]"},
        {"error": "model 'second' does not exist; this API serves ['first', 'linear']"},
        {"error": "model_version must be an integer or 'latest', not 'newest'"},
    ]


def test_tensorflow_builtin_handler_takes_items_keyed_by_input_name(
    daemon: Daemon, model_project: ModelProject, model_python: str, tensorflow_models: Models
) -> None:
    """No handler.py: items are dicts of input name -> row, stacked into the signature's
    inputs; no `outputs` configured: each entry is a dict of every output."""
    project = model_project(
        "tfbuiltin",
        "tensorflow",
        f'path = "{tensorflow_models.root / "tensorflow/linear"}"',
        model_python,
        config="{model_version = 1}",
    )
    daemon.client.deploy(project)
    items = [{"x": row} for row in tensorflow_models.inputs]
    status, results = run_job(
        daemon, "tfbuiltin", {"workers": 1, "item_list": {"items": items, "batch_size": 2}}
    )
    assert status["status"] == "succeeded", status
    assert [len(result) for result in results] == [2, 2]
    entries = results[0] + results[1]
    assert all(list(entry) == ["y"] for entry in entries)
    assert close([entry["y"] for entry in entries], tensorflow_models.answer("tensorflow/linear/1"))


def test_a_gpu_api_under_tensorflow_cpu_fails_at_init(
    make_daemon: Any, model_project: ModelProject, model_python: str, tensorflow_models: Models
) -> None:
    """The worker is handed GPU 0 ("gpus = [0]": none to detect here); tensorflow-cpu sees
    no GPU, and the worker refuses rather than run on the CPU."""
    daemon = make_daemon(gpus=[0])
    project = model_project(
        "tfgpu",
        "tensorflow",
        f'path = "{tensorflow_models.root / "tensorflow/linear"}"',
        model_python,
        extra="[compute]\ngpu = 1",
    )
    daemon.client.deploy(project)
    status, _ = run_job(
        daemon, "tfgpu", {"workers": 1, "item_list": {"items": [[1, 2, 3]], "batch_size": 1}}
    )
    assert status["status"] == "worker_error"
    assert "the API asks for 1 GPU(s) ([compute] gpu), but TensorFlow" in status["error"]
    assert "sees none (CUDA_VISIBLE_DEVICES='0')" in status["error"]
