"""The onnx client: onnxruntime sessions, on the CPU or the worker's GPU.

onnxruntime and numpy are imported when the client is made, in the worker, from the
API's own interpreter.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchd.worker.models.client import ModelClient
from batchd.worker.models.discovery import FoundModel

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"

# onnxruntime's input type names -> numpy dtype names.
_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
    "tensor(string)": "object",
}


@dataclass(slots=True)
class OnnxModel:
    session: Any
    # (name, numpy dtype) of each input, in the graph's order
    inputs: list[tuple[str, str | None]]
    outputs: list[str]


class OnnxClient(ModelClient):
    runtime = "onnx"

    def __init__(
        self, models: dict[str, FoundModel], cache_size: int | None = None, gpus: int = 0
    ) -> None:
        # By name: the daemon's interpreter (and its type checker) has neither.
        onnxruntime = importlib.import_module("onnxruntime")
        super().__init__(models, cache_size)
        self._numpy = importlib.import_module("numpy")
        self._onnxruntime = onnxruntime
        self.providers = [CPU_PROVIDER]
        if gpus:
            available = onnxruntime.get_available_providers()
            if CUDA_PROVIDER not in available:
                raise RuntimeError(
                    f"the API asks for {gpus} GPU(s) ([compute] gpu), but this onnxruntime "
                    f"({onnxruntime.__version__}) offers only {available}: install "
                    "onnxruntime-gpu in the API's interpreter, or set gpu = 0 to run on the CPU"
                )
            self.providers = [CUDA_PROVIDER, CPU_PROVIDER]

    def _load(self, found: FoundModel, version: int, path: Path) -> OnnxModel:
        options = self._onnxruntime.SessionOptions()
        threads = os.environ.get("OMP_NUM_THREADS", "")
        if threads.isdigit():
            # onnxruntime's own pool takes every core by default: with several workers on
            # a box, [handler] env = {OMP_NUM_THREADS = "1"} keeps one core each.
            options.intra_op_num_threads = int(threads)
        session = self._onnxruntime.InferenceSession(str(path), options, providers=self.providers)
        ran_on = session.get_providers()
        if self.providers[0] == CUDA_PROVIDER and ran_on[:1] != [CUDA_PROVIDER]:
            # onnxruntime falls back to the CPU with only a warning when CUDA fails to load.
            raise RuntimeError(
                f"the API asks for a GPU, but onnxruntime could not start {CUDA_PROVIDER} "
                f"(CUDA or cuDNN missing or mismatched?) and would run on {ran_on}"
            )
        inputs = [(arg.name, _DTYPES.get(arg.type)) for arg in session.get_inputs()]
        outputs = [arg.name for arg in session.get_outputs()]
        return OnnxModel(session, inputs, outputs)

    def _run(self, model: OnnxModel, model_input: Any, name: str) -> dict[str, Any]:
        feed = {}
        if isinstance(model_input, dict):
            for input_name, dtype in model.inputs:
                if input_name not in model_input:
                    raise KeyError(f"model {name!r} needs the input {input_name!r}")
                feed[input_name] = self._numpy.asarray(model_input[input_name], dtype=dtype)
        elif len(model.inputs) == 1:
            input_name, dtype = model.inputs[0]
            feed[input_name] = self._numpy.asarray(model_input, dtype=dtype)
        else:
            names = [input_name for input_name, _ in model.inputs]
            raise TypeError(f"model {name!r} has several inputs: give a dict with keys {names}")
        return dict(zip(model.outputs, model.session.run(None, feed), strict=True))

    def _native(self, model: OnnxModel) -> Any:
        return model.session
