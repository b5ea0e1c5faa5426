"""W4's model and its plain loop, run under the model venv's python (onnx, onnxruntime,
numpy): the daemon's interpreter has none of them.

    python mlp.py make OUT.onnx          write the MLP; print its parameter count
    python mlp.py loop MODEL ITEMS BATCH START STEP
        run batches START, START+STEP, ... of the items (a JSON list of rows) through the
        model, as a plain program would: stack, run, tolist; print the items done and the
        seconds the loop took (the session made and warmed first, not counted)
"""

from __future__ import annotations

import itertools
import json
import sys
import time

import numpy as np

# input 64 -> 2048 -> 2048 -> 1024 -> 10 classes: about 6.4 million parameters.
LAYERS = [64, 2048, 2048, 1024, 10]


def make(out: str) -> None:
    from onnx import TensorProto, helper, numpy_helper, save

    rng = np.random.default_rng(4)
    nodes, weights, current = [], [], "x"
    for index, (fan_in, fan_out) in enumerate(itertools.pairwise(LAYERS)):
        w = (rng.normal(size=(fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        b = np.zeros(fan_out, dtype=np.float32)
        weights += [
            numpy_helper.from_array(w, f"W{index}"),
            numpy_helper.from_array(b, f"b{index}"),
        ]
        nodes.append(helper.make_node("Gemm", [current, f"W{index}", f"b{index}"], [f"h{index}"]))
        current = f"h{index}"
        if fan_out != LAYERS[-1]:
            nodes.append(helper.make_node("Relu", [current], [f"r{index}"]))
            current = f"r{index}"
    nodes.append(helper.make_node("Softmax", [current], ["probabilities"], axis=1))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", LAYERS[0]])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", LAYERS[-1]])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    save(model, out)
    print(sum(int(np.prod(tensor.dims)) for tensor in weights))


def loop(model: str, items_path: str, batch: int, start: int, step: int) -> None:
    import onnxruntime

    with open(items_path) as source:
        items = json.load(source)
    batches = [items[i : i + batch] for i in range(0, len(items), batch)][start::step]
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    session.run(None, {"x": np.stack(batches[0]).astype(np.float32)})
    results = []
    begun = time.perf_counter()
    for rows in batches:
        (probabilities,) = session.run(None, {"x": np.asarray(np.stack(rows), np.float32)})
        results.append(probabilities.tolist())
    elapsed = time.perf_counter() - begun
    print(json.dumps({"items": sum(len(rows) for rows in batches), "seconds": elapsed}))


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2])
    else:
        loop(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
