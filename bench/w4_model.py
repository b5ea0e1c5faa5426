"""W4 a real model: an ONNX MLP of about 6.4 million parameters, batch_size 64, 2 workers.

batchd serves it with the built-in handler (no handler.py) from the model venv's
interpreter (``make .venv-models/.installed``), the model read in place from outside the
project. The limit is the same model in a plain program, one process per core, each
taking every other batch: read the items, make the session, then stack, run and tolist
each batch. Both are timed end to end (batchd from the POST to the job's end_time; the
plain loop from starting its processes to their exit): what a user waits for either way.
onnxruntime gets one thread per process on both sides (OMP_NUM_THREADS=1 for batchd's
workers), so two processes share the two cores without oversubscribing them.
"""

from __future__ import annotations

import json
import random
import subprocess
import time
from pathlib import Path

from batchd.client import TERMINAL_STATUSES
from bench.common import (
    REPO,
    WORKERS,
    Context,
    Daemon,
    Result,
    Target,
    parse_iso,
    progress,
    ratio,
)

KEY = "W4"
TITLE = "W4 a real model (ONNX MLP, 6.4M parameters, on the CPU)"
BATCH_SIZE = 64
MODEL_PYTHON = REPO / ".venv-models" / "bin" / "python"
MLP = Path(__file__).resolve().parent / "models" / "mlp.py"


def _model_python() -> str:
    if not MODEL_PYTHON.exists():
        raise RuntimeError(f"{MODEL_PYTHON} is missing: make .venv-models/.installed")
    return str(MODEL_PYTHON)


def _prepare(ctx: Context) -> tuple[Path, Path, int, list[list[float]]]:
    """The model, its project (batchd.toml alone), the parameter count and the items."""
    root = ctx.workdir / "w4"
    root.mkdir(exist_ok=True)
    model = root / "mlp.onnx"
    made = subprocess.run(
        [_model_python(), str(MLP), "make", str(model)],
        check=True,
        capture_output=True,
        text=True,
    )
    rng = random.Random(4)
    items = [
        [round(rng.uniform(-1, 1), 4) for _ in range(64)]
        for _ in range(ctx.sizes.w4_batches * BATCH_SIZE)
    ]
    project = root / "project"
    project.mkdir(exist_ok=True)
    (project / "batchd.toml").write_text(
        'name = "bench-w4"\n[handler]\ntype = "onnx"\n'
        f'python = "{_model_python()}"\n'
        'env = { OMP_NUM_THREADS = "1" }\n'
        'config = { outputs = "probabilities" }\n'
        f'[handler.models]\npath = "{model}"\n'
    )
    return model, project, int(made.stdout.strip()), items


def _plain_loop(model: Path, items_path: Path) -> tuple[float, float]:
    """Items/s of the plain loop in WORKERS processes: end to end, and in the loop alone."""
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            [
                *(_model_python(), str(MLP), "loop", str(model), str(items_path)),
                *(str(BATCH_SIZE), str(index), str(WORKERS)),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for index in range(WORKERS)
    ]
    reports = [json.loads(process.communicate()[0]) for process in processes]
    elapsed = time.perf_counter() - started
    if any(process.returncode for process in processes):
        raise RuntimeError("the W4 plain loop failed")
    done = sum(report["items"] for report in reports)
    return done / elapsed, done / max(report["seconds"] for report in reports)


def run(ctx: Context) -> Result:
    if not MODEL_PYTHON.exists():
        result = Result(KEY, TITLE, "An ONNX MLP through the built-in handler.")
        result.note(
            f"The model venv is missing ({MODEL_PYTHON}): no figures "
            "(`make .venv-models/.installed` builds it)."
        )
        return result
    model, project, parameters, items = _prepare(ctx)
    n = len(items)
    items_path = model.with_name("items.json")
    items_path.write_text(json.dumps(items))
    body = json.dumps(
        {"workers": WORKERS, "item_list": {"items": items, "batch_size": BATCH_SIZE}},
        separators=(",", ":"),
    ).encode()
    result = Result(
        KEY,
        TITLE,
        f"{n:,} items of 64 floats, batch_size {BATCH_SIZE}, an ONNX MLP 64-2048-2048-1024-10 "
        f"({parameters:,} parameters) through the built-in handler, {WORKERS} workers, "
        "onnxruntime on the CPU, one thread each. Limit: the same model in a plain loop, "
        f"one process per core ({WORKERS}). Both timed end to end.",
    )
    for attempt in range(1, ctx.runs + 1):
        limit, loop_only = _plain_loop(model, items_path)
        result.add("limit: plain loop, end to end", "items/s", limit)
        result.add("plain loop, the loop alone (no start, no model load)", "items/s", loop_only)
        with Daemon(ctx.workdir, "w4") as daemon:
            api = str(daemon.client.deploy(project)["name"])
            daemon.wait_idle()
            submitted = time.time()
            job_id = str(daemon.submit(api, body)["job_id"])
            admitted = time.time()
            while True:
                status = daemon.status(api, job_id)
                if status["status"] in TERMINAL_STATUSES:
                    break
                time.sleep(0.1)
            if status["status"] != "succeeded":
                raise RuntimeError(f"the W4 job ended {status['status']}: {status.get('error')}")
            end = parse_iso(status.get("end_time")) or time.time()
        elapsed = end - submitted
        rate = n / elapsed
        progress(
            f"W4 run {attempt}/{ctx.runs}: batchd {rate:,.0f} items/s, plain loop "
            f"{limit:,.0f} items/s end to end ({ratio(rate, limit):.1%}), "
            f"{loop_only:,.0f} in the loop alone"
        )
        result.add("batchd, POST to end", "items/s", rate)
        result.add("elapsed, POST to end", "s", elapsed, 2)
        # The items travel as JSON floats: their admission is part of what batchd costs.
        result.add("admission, POST to 2xx", "s", admitted - submitted, 2)
        result.add("batchd / plain loop", "%", 100 * ratio(rate, limit), 1)
    result.targets.append(
        Target(
            "W4 batchd / plain loop (one process per core)",
            result.median("batchd / plain loop") / 100,
            ">=",
            0.95,
            "",
            3,
        )
    )
    return result
