from __future__ import annotations

from pathlib import Path

import pytest

# The model test venv builds the classifier's ONNX model (it has the onnx package).
from tests.models.conftest import model_python

__all__ = ["model_python"]


@pytest.fixture(scope="session")
def shared_venv_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One venv folder for the session: each project's requirements are installed once."""
    return tmp_path_factory.mktemp("cortex-venvs")
