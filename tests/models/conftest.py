"""The model test venv (``make .venv-models/.installed``: onnx, onnxruntime, tensorflow-cpu,
numpy) and the models the tests make with it."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODELS_VENV = ROOT / ".venv-models"
MAKE_MODELS = Path(__file__).with_name("make_models.py")


@pytest.fixture(scope="session")
def model_python() -> str:
    """The model venv's interpreter. Missing: the tests fail as root or on CI (make test
    builds it, so its absence is a broken setup), and skip elsewhere, saying why."""
    python = MODELS_VENV / "bin" / "python"
    if not (MODELS_VENV / ".installed").exists() or not python.exists():
        reason = f"the model test venv {MODELS_VENV} is missing: make .venv-models/.installed"
        if os.geteuid() == 0 or os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return str(python)


class Models:
    """Models made by make_models.py under `root`, and what they answered, run directly."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.expected: dict[str, Any] = json.loads((root / "expected.json").read_text())
        self.inputs: list[list[float]] = self.expected["inputs"]

    def answer(self, key: str, output: str = "y") -> list[list[float]]:
        """The direct run's rows of `output` for "<runtime>/<model>/<version>"."""
        rows: list[list[float]] = self.expected[key][output]
        return rows


def _make(model_python: str, root: Path, runtime: str) -> Models:
    subprocess.run(
        [model_python, str(MAKE_MODELS), str(root), runtime],
        check=True,
        capture_output=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        timeout=300,
    )
    return Models(root)


@pytest.fixture(scope="session")
def onnx_models(model_python: str, tmp_path_factory: pytest.TempPathFactory) -> Models:
    return _make(model_python, tmp_path_factory.mktemp("onnx-models"), "onnx")


@pytest.fixture(scope="session")
def tensorflow_models(model_python: str, tmp_path_factory: pytest.TempPathFactory) -> Models:
    return _make(model_python, tmp_path_factory.mktemp("tf-models"), "tensorflow")


ModelProject = Callable[..., Path]


@pytest.fixture
def model_project(tmp_path: Path) -> ModelProject:
    """Write a model API's project: model_project(name, runtime, models_toml, python=...,
    handler=None (the built-in handler), config=None, files={relpath: bytes}, extra="")."""

    def factory(
        name: str,
        runtime: str,
        models_toml: str,
        python: str,
        handler: str | None = None,
        config: str = "",
        files: dict[str, bytes] | None = None,
        extra: str = "",
    ) -> Path:
        root = tmp_path / "model-projects" / name
        root.mkdir(parents=True)
        lines = [f'name = "{name}"', "[handler]", f'type = "{runtime}"', f'python = "{python}"']
        if handler is not None:
            (root / "handler.py").write_text(handler)
            lines.append('path = "handler.py"')
        if config:
            lines.append(f"config = {config}")
        lines += ["[handler.models]", models_toml, extra]
        (root / "batchd.toml").write_text("\n".join(lines) + "\n")
        for relpath, content in (files or {}).items():
            (root / relpath).parent.mkdir(parents=True, exist_ok=True)
            (root / relpath).write_bytes(content)
        return root

    return factory
