#!/usr/bin/env bash
# On a machine with NVIDIA GPUs: checks that a torch handler in a batchd worker sees
# exactly the GPU it was assigned. Needs torch with CUDA in the interpreter given as
# $PYTHON (default: python3); uses a scratch state dir and port. Exit 0 on success.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
PORT=${PORT:-18799}
WORK=$(mktemp -d)
trap 'kill "$DAEMON" 2>/dev/null || true; wait "$DAEMON" 2>/dev/null || true; rm -rf "$WORK"' EXIT

GPUS=$(nvidia-smi -L | grep -c '^GPU ')
echo "GPUs on this machine: $GPUS"
mkdir -p "$WORK/project"
cat > "$WORK/project/batchd.toml" <<TOML
name = "gpucheck"
[handler]
path = "handler.py"
python = "$(command -v "$PYTHON")"
[compute]
gpu = 1
TOML
cat > "$WORK/project/handler.py" <<'PY'
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

.venv/bin/batchd serve --listen "127.0.0.1:$PORT" --state-dir "$WORK/state" --deploy "$WORK/project" &
DAEMON=$!
URL="http://127.0.0.1:$PORT"
for _ in $(seq 1 120); do curl -sf "$URL/healthz" >/dev/null && break; sleep 0.5; done
ITEMS=$("$PYTHON" -c "print(list(range($GPUS * 2)))")
JOB=$(curl -sf -X POST "$URL/batch/gpucheck" \
      -d "{\"workers\": $GPUS, \"item_list\": {\"items\": $ITEMS, \"batch_size\": 1}}")
ID=$("$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["job_id"])' <<<"$JOB")
.venv/bin/batchd --url "$URL" get gpucheck "$ID" --watch
.venv/bin/batchd --url "$URL" results gpucheck "$ID" | "$PYTHON" -c '
import json, sys
rows = [json.loads(line)["result"] for line in sys.stdin]
assert rows, "no results"
for row in rows:
    assert row["count"] == 1, row        # exactly one device visible to the worker
    assert "," not in row["visible"], row
print("every worker saw exactly its own GPU:", sorted({r["visible"] for r in rows}))
'
