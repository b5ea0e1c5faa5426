"""The tensorflow client: SavedModels loaded in the worker, run through a signature.

TensorFlow is imported when the client is made, in the worker, from the API's own
interpreter. It sees only the worker's GPUs: the daemon sets CUDA_VISIBLE_DEVICES.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchd.worker.models.client import ModelClient
from batchd.worker.models.discovery import FoundModel

# Cortex's choice when no signature_key is configured and a model has several.
DEFAULT_SIGNATURE_KEY = "predict"


@dataclass(slots=True)
class TensorFlowModel:
    # What tf.saved_model.load returned: it holds the variables the signature uses.
    saved: Any
    signature: Any
    signature_key: str
    # input name -> its tf.DType
    inputs: dict[str, Any]


class TensorFlowClient(ModelClient):
    runtime = "tensorflow"

    def __init__(
        self, models: dict[str, FoundModel], cache_size: int | None = None, gpus: int = 0
    ) -> None:
        # TensorFlow's C++ start-up notes are not the handler's log; its warnings stay.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
        tf = importlib.import_module("tensorflow")
        super().__init__(models, cache_size)
        self._tf = tf
        if gpus:
            found = tf.config.list_physical_devices("GPU")
            if not found:
                visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
                raise RuntimeError(
                    f"the API asks for {gpus} GPU(s) ([compute] gpu), but TensorFlow "
                    f"{tf.__version__} sees none (CUDA_VISIBLE_DEVICES={visible!r}): install "
                    "a TensorFlow built with CUDA (not tensorflow-cpu) in the API's "
                    "interpreter, or set gpu = 0 to run on the CPU"
                )

    def _load(self, found: FoundModel, version: int, path: Path) -> TensorFlowModel:
        saved = self._tf.saved_model.load(str(path))
        signatures = dict(saved.signatures)
        key = _signature_key(found.signature_key, sorted(signatures), found.name, version)
        signature = signatures[key]
        _, named = signature.structured_input_signature
        inputs = {name: spec.dtype for name, spec in named.items()}
        return TensorFlowModel(saved, signature, key, inputs)

    def _run(self, model: TensorFlowModel, model_input: Any, name: str) -> dict[str, Any]:
        if not isinstance(model_input, dict):
            if len(model.inputs) != 1:
                raise TypeError(
                    f"model {name!r} (signature {model.signature_key!r}) has several "
                    f"inputs: give a dict with keys {sorted(model.inputs)}"
                )
            model_input = {next(iter(model.inputs)): model_input}
        tensors = {}
        for input_name, dtype in model.inputs.items():
            if input_name not in model_input:
                raise KeyError(
                    f"model {name!r} (signature {model.signature_key!r}) needs the input "
                    f"{input_name!r}"
                )
            tensors[input_name] = self._tf.convert_to_tensor(model_input[input_name], dtype)
        outputs = model.signature(**tensors)
        return {output: tensor.numpy() for output, tensor in outputs.items()}

    def _native(self, model: TensorFlowModel) -> Any:
        return model.saved


def _signature_key(configured: str | None, available: list[str], name: str, version: int) -> str:
    """Cortex's rule: the configured key; else the only one; else "predict" if there."""
    which = f"model {name!r} version {version}"
    if not available:
        raise ValueError(f"{which} has no signatures")
    if configured is not None:
        if configured not in available:
            raise ValueError(
                f"signature_key {configured!r} is not among the signatures of {which}: {available}"
            )
        return configured
    if len(available) == 1:
        return available[0]
    if DEFAULT_SIGNATURE_KEY in available:
        return DEFAULT_SIGNATURE_KEY
    raise ValueError(
        f"{which} has several signatures, {available}: set signature_key in [handler.models]"
    )
