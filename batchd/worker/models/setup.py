"""Building a worker's model client from the launch environment (standard library only
until the client imports its runtime)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from batchd.worker.models.client import ModelClient
from batchd.worker.models.discovery import discover


def model_clients(settings_json: str) -> dict[str, Any]:
    """{"onnx_client": ...} or {"tensorflow_client": ...}: the argument a Handler's
    constructor may declare, its models found (relative paths are under the worker's
    directory, the project) and the latest version of each loaded."""
    settings = json.loads(settings_json)
    runtime: str = settings["type"]
    models: dict[str, Any] = settings["models"]
    found = discover(runtime, models, Path.cwd())
    client: ModelClient
    try:
        if runtime == "onnx":
            from batchd.worker.models.onnx import OnnxClient

            client = OnnxClient(found, models.get("cache_size"), settings.get("gpus", 0))
        else:
            from batchd.worker.models.tensorflow import TensorFlowClient

            client = TensorFlowClient(found, models.get("cache_size"), settings.get("gpus", 0))
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"this {runtime} API needs {exc.name} in its interpreter, {sys.executable}, which "
            "lacks it: set [handler] python to one that has it (with numpy)",
            name=exc.name,
        ) from exc
    client.load_initial()
    return {f"{runtime}_client": client}
