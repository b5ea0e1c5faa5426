"""Write the test models and what they answer when run directly.

Run under the model test venv's python (it has onnx, onnxruntime, tensorflow, numpy), not
the daemon's: ``python make_models.py OUT [onnx|tensorflow]...``. Writes, under OUT:

    onnx/linear/1/model.onnx, onnx/linear/2/model.onnx   y = x @ W + b, prob = softmax(y)
    onnx/other/model.onnx                                an unversioned model
    tensorflow/linear/1/, tensorflow/linear/2/           SavedModels: y = x @ W + b
    expected.json   {"inputs": X, "<runtime>/<model>/<version>": {output: rows}}

The weights differ from model to model and version to version, so an answer tells which
model and version ran.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

INPUTS = np.linspace(-1.5, 2.0, 4 * 3, dtype=np.float32).reshape(4, 3)


def weights(seed: int) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(3, 2)).astype(np.float32),
        rng.normal(size=(2,)).astype(np.float32),
    )


def onnx_linear(path: Path, seed: int) -> dict[str, Any]:
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper, save

    w, b = weights(seed)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["y"]),
            helper.make_node("Softmax", ["y"], ["prob"], axis=1),
        ],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 2]),
        ],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    save(model, str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y, prob = session.run(None, {"x": INPUTS})
    return {"y": y.tolist(), "prob": prob.tolist()}


def tensorflow_linear(path: Path, seed: int) -> dict[str, Any]:
    import tensorflow as tf

    w, b = weights(seed)

    class Linear(tf.Module):
        def __init__(self) -> None:
            self.w = tf.Variable(w)
            self.b = tf.Variable(b)

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def serve(self, x: Any) -> dict[str, Any]:
            return {"y": tf.matmul(x, self.w) + self.b}

    module = Linear()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    loaded = tf.saved_model.load(str(path))
    y = loaded.signatures["serving_default"](x=tf.constant(INPUTS))["y"].numpy()
    return {"y": y.tolist()}


def main(out: Path, runtimes: list[str]) -> None:
    expected: dict[str, Any] = {"inputs": INPUTS.tolist()}
    if "onnx" in runtimes:
        expected["onnx/linear/1"] = onnx_linear(out / "onnx/linear/1/model.onnx", 1)
        expected["onnx/linear/2"] = onnx_linear(out / "onnx/linear/2/model.onnx", 2)
        expected["onnx/other/1"] = onnx_linear(out / "onnx/other/model.onnx", 3)
    if "tensorflow" in runtimes:
        expected["tensorflow/linear/1"] = tensorflow_linear(out / "tensorflow/linear/1", 1)
        expected["tensorflow/linear/2"] = tensorflow_linear(out / "tensorflow/linear/2", 2)
    (out / "expected.json").write_text(json.dumps(expected))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:] or ["onnx", "tensorflow"])
