#!/usr/bin/env bash
# On a machine with NVIDIA GPUs, two checks through a real daemon:
#  1. torch: a handler in a batchd worker sees exactly the GPU it was assigned. Needs torch
#     with CUDA in $PYTHON (default: python3); skipped, saying so, when it has no torch.
#  2. onnx: an ONNX model API ([handler] type = "onnx", [compute] gpu = 1) runs a model
#     (bench W4's MLP) on its GPU; reports which execution provider ran and where. Needs
#     onnx and onnxruntime-gpu in $ONNX_PYTHON (default: .venv-models/bin/python, whose
#     CPU-only onnxruntime shows the refusal instead: a GPU API never runs on the CPU).
# Uses a scratch state dir and port. Exit 0: every check that could run passed; 1: one
# failed; 77: nothing to check (no GPU, or neither interpreter has a runtime).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
ONNX_PYTHON=${ONNX_PYTHON:-.venv-models/bin/python}
PORT=${PORT:-18799}
WORK=$(mktemp -d)
DAEMON=""
trap '[ -n "$DAEMON" ] && { kill "$DAEMON" 2>/dev/null || true; wait "$DAEMON" 2>/dev/null || true; }; rm -rf "$WORK"' EXIT

if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "SKIPPED: nvidia-smi is not installed: no NVIDIA GPU to check on this machine"
    exit 77
fi
GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
echo "GPUs on this machine: $GPUS"
if [ "$GPUS" -eq 0 ]; then
    echo "SKIPPED: nvidia-smi lists no GPU (driver not loaded?)"
    exit 77
fi
URL="http://127.0.0.1:$PORT"
RAN=0

# --- 1. torch: each worker sees exactly its own GPU ---------------------------------------
mkdir -p "$WORK/torch"
cat > "$WORK/torch/batchd.toml" <<TOML
name = "gpucheck"
[handler]
path = "handler.py"
python = "$(command -v "$PYTHON")"
[compute]
gpu = 1
TOML
cat > "$WORK/torch/handler.py" <<'PY'
import os
import torch

class Handler:
    def __init__(self, config):
        pass

    def handle_batch(self, payload):
        visible = os.environ["CUDA_VISIBLE_DEVICES"]
        name = torch.cuda.get_device_name(0)
        uuid = str(torch.cuda.get_device_properties(0).uuid)
        return {"visible": visible, "count": torch.cuda.device_count(), "name": name, "uuid": uuid}
PY

# --- 2. onnx: the model on the GPU, through onnx_client ----------------------------------
ONNX=0
if [ -x "$ONNX_PYTHON" ] && "$ONNX_PYTHON" -c 'import onnx, onnxruntime' 2>/dev/null; then
    ONNX=1
    mkdir -p "$WORK/onnx"
    "$ONNX_PYTHON" bench/models/mlp.py make "$WORK/mlp.onnx" >/dev/null
    echo "onnxruntime in $ONNX_PYTHON offers: $("$ONNX_PYTHON" -c 'import onnxruntime as o; print(o.__version__, o.get_available_providers())')"
    cat > "$WORK/onnx/batchd.toml" <<TOML
name = "onnxgpu"
[handler]
type = "onnx"
path = "handler.py"
python = "$(cd "$(dirname "$ONNX_PYTHON")" && pwd)/$(basename "$ONNX_PYTHON")"
[handler.models]
path = "$WORK/mlp.onnx"
[compute]
gpu = 1
TOML
    cat > "$WORK/onnx/handler.py" <<'PY'
import os

class Handler:
    def __init__(self, onnx_client):
        self.client = onnx_client

    def handle_batch(self, payload):
        (probabilities,) = self.client.predict(payload).values()
        return {
            "providers": self.client.get_model().get_providers(),
            "visible": os.environ["CUDA_VISIBLE_DEVICES"],
            "rows": len(probabilities),
        }
PY
else
    echo "SKIPPED onnx: $ONNX_PYTHON has no onnx and onnxruntime (make .venv-models/.installed)"
fi

TORCH=0
if "$PYTHON" -c 'import torch' 2>/dev/null; then TORCH=1; else
    echo "SKIPPED torch: $PYTHON has no torch"
fi
if [ "$TORCH" -eq 0 ] && [ "$ONNX" -eq 0 ]; then
    echo "SKIPPED: no runtime to check the GPU with"
    exit 77
fi

.venv/bin/batchd serve --listen "127.0.0.1:$PORT" --state-dir "$WORK/state" &
DAEMON=$!
for _ in $(seq 1 120); do curl -sf "$URL/healthz" >/dev/null && break; sleep 0.5; done

# Submits $2 to API $1, waits for the job's end and prints its id.
run_job() {
    local job id
    job=$(curl -sf -X POST "$URL/batch/$1" -d "$2")
    id=$(.venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["job_id"])' <<<"$job")
    .venv/bin/batchd --url "$URL" get "$1" "$id" --watch >&2 || true
    echo "$id"
}

FAILED=0
if [ "$TORCH" -eq 1 ]; then
    .venv/bin/batchd --url "$URL" deploy "$WORK/torch"
    ITEMS=$(.venv/bin/python -c "print(list(range($GPUS * 2)))")
    ID=$(run_job gpucheck "{\"workers\": $GPUS, \"item_list\": {\"items\": $ITEMS, \"batch_size\": 1}}")
    .venv/bin/batchd --url "$URL" results gpucheck "$ID" | .venv/bin/python -c '
import json, sys
rows = [json.loads(line)["result"] for line in sys.stdin]
assert rows, "no results"
for row in rows:
    assert row["count"] == 1, row        # exactly one device visible to the worker
    assert "," not in row["visible"], row
print("torch: every worker saw exactly its own GPU:", sorted({r["visible"] for r in rows}))
' || FAILED=1
    RAN=1
fi

if [ "$ONNX" -eq 1 ]; then
    .venv/bin/batchd --url "$URL" deploy "$WORK/onnx"
    ROWS=$(.venv/bin/python -c "import random; print([[random.uniform(-1, 1) for _ in range(64)] for _ in range(64)])")
    ID=$(run_job onnxgpu "{\"workers\": 1, \"item_list\": {\"items\": [$ROWS], \"batch_size\": 1}}")
    .venv/bin/python - "$URL" "$ID" <<'PY' || FAILED=1
import sys
from batchd.client import Client

client = Client(sys.argv[1])
status = client.get_job("onnxgpu", sys.argv[2])["job_status"]
if status["status"] != "succeeded":
    print(f"onnx: the job ended {status['status']}: {status.get('error', '')[-1500:]}")
    sys.exit(1)
(row,) = [record["result"] for record in client.results("onnxgpu", sys.argv[2])]
provider = row["providers"][0]
print(f"onnx: ran on {provider} (providers {row['providers']}), "
      f"CUDA_VISIBLE_DEVICES={row['visible']}, {row['rows']} rows")
sys.exit(provider != "CUDAExecutionProvider")
PY
    RAN=1
fi
[ "$RAN" -eq 1 ] || exit 77
exit "$FAILED"
