"""The built-in handler of a model API with no handler file of its own.

A batch's payload is a list of items: arrays (nested lists), or dicts of input name ->
array. They are stacked along a new first axis into the model's input, the model runs
once per batch, and the result is one entry per item, in order. `[handler.config]` (or a
job's config, which wins) may set:

- ``outputs``: the output name (a string: each entry is that output's row) or names (a
  list: each entry is a dict of those outputs); unset: a dict of every output;
- ``model_name`` and ``model_version``: which model and version to run (default: the
  only model, its latest version).
"""

from __future__ import annotations

import importlib
from typing import Any

from batchd.worker.models.client import ModelClient


class BuiltinHandler:
    def __init__(
        self,
        config: dict[str, Any],
        onnx_client: ModelClient | None = None,
        tensorflow_client: ModelClient | None = None,
    ) -> None:
        client = onnx_client or tensorflow_client
        if client is None:
            raise RuntimeError("the built-in handler serves onnx and tensorflow APIs only")
        self.client = client
        self.numpy = importlib.import_module("numpy")
        outputs = config.get("outputs")
        if not (outputs is None or isinstance(outputs, str) or _strings(outputs)):
            raise TypeError(f"config outputs must be a name or a list of names, not {outputs!r}")
        self.outputs: str | list[str] | None = outputs
        self.model_name: str | None = config.get("model_name")
        self.model_version: Any = config.get("model_version")

    def handle_batch(self, payload: Any) -> list[Any]:
        if not isinstance(payload, list) or not payload:
            raise TypeError("the built-in handler takes a batch that is a non-empty list")
        stack = self.numpy.stack
        if all(isinstance(item, dict) for item in payload):
            model_input: Any = {key: stack([item[key] for item in payload]) for key in payload[0]}
        else:
            model_input = stack(payload)
        outputs = self.client.predict(model_input, self.model_name, self.model_version)
        wanted = self.outputs
        names = list(outputs) if wanted is None else [wanted] if isinstance(wanted, str) else wanted
        rows: dict[str, list[Any]] = {}
        for name in names:
            if name not in outputs:
                raise KeyError(f"the model has no output {name!r}; its outputs: {list(outputs)}")
            value = outputs[name]
            shape = getattr(value, "shape", ())
            if shape[:1] != (len(payload),):
                raise ValueError(
                    f"output {name!r} has shape {shape}, not one row per item of the batch "
                    f"({len(payload)})"
                )
            # One tolist() for the whole output: Python numbers and lists, at C speed.
            listed = value.tolist()
            rows[name] = _json_safe(listed) if value.dtype.kind in "OS" else listed
        if isinstance(wanted, str):
            return rows[wanted]
        return [{name: rows[name][index] for name in names} for index in range(len(payload))]


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _json_safe(value: Any) -> Any:
    """numpy's tolist() gives Python numbers and lists; string tensors give bytes."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value
