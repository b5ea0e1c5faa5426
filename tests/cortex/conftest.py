from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_venv_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One venv folder for the session: each project's requirements are installed once."""
    return tmp_path_factory.mktemp("cortex-venvs")
