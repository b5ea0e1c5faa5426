"""W4 a real model: an ONNX MLP of about 6.4 million parameters, batch_size 64, 2 workers.

batchd serves it with the built-in handler (no handler.py) from the model venv's
interpreter (``make .venv-models/.installed``), the model read in place from outside the
project. The limit is the same model in a plain program, one process per core, each
taking every other batch: read the items, make the session, then stack, run and tolist
each batch. Both are timed end to end (batchd from the POST to the job's end_time; the
plain loop from starting its processes to their exit): what a user waits for either way.
onnxruntime gets one thread per process on both sides (OMP_NUM_THREADS=1 for batchd's
workers), so two processes share the two cores without oversubscribing them.

The CPU both took is reported too: on a shared machine it moves less than time does, and it
shows what the daemon adds (the items' JSON decoded and encoded at admission), where its
workers take about as much as the plain loop's processes.
"""

from __future__ import annotations

import json
import random
import resource
import subprocess
import time
from pathlib import Path
from typing import Any

from batchd.client import TERMINAL_STATUSES
from bench.common import (
    REPO,
    WORKERS,
    Context,
    Daemon,
    Result,
    Target,
    cpu_seconds,
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


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _plain_loop(model: Path, items_path: Path) -> tuple[float, float, float]:
    """Items/s of the plain loop in WORKERS processes, end to end and in the loop alone,
    and the CPU seconds the processes took."""
    cpu_before = _children_cpu()
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
    loop_only = done / max(report["seconds"] for report in reports)
    return done / elapsed, loop_only, _children_cpu() - cpu_before


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
        limit, loop_only, loop_cpu = _plain_loop(model, items_path)
        result.add("limit: plain loop, end to end", "items/s", limit)
        result.add("plain loop, the loop alone (no start, no model load)", "items/s", loop_only)
        with Daemon(ctx.workdir, "w4") as daemon:
            api = str(daemon.client.deploy(project)["name"])
            daemon.wait_idle()
            proc = daemon.ps()
            before, alive_before = proc.cpu_times(), daemon.cpu_of_descendants()
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
            daemon.wait_idle()
            after, alive_after = proc.cpu_times(), daemon.cpu_of_descendants()
        batchd_cpu = _daemon_cpu(before, after, alive_before, alive_after)
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
        # CPU, unlike time, is not taken by whatever else runs on a shared machine.
        result.add("CPU: plain loop processes", "s", loop_cpu, 2)
        result.add("CPU: batchd (daemon and workers)", "s", batchd_cpu, 2)
        result.add("CPU: plain loop / batchd", "%", 100 * ratio(loop_cpu, batchd_cpu), 1)
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
    result.targets.append(
        Target(
            "W4 CPU: plain loop / batchd (daemon and workers)",
            result.median("CPU: plain loop / batchd") / 100,
            digits=3,
        )
    )
    return result


def _daemon_cpu(
    before: Any, after: Any, alive_before: dict[int, float], alive_after: dict[int, float]
) -> float:
    """CPU seconds of the daemon and its workers between two samples: its own, the workers
    it reaped meanwhile (less what they had spent before), and the live ones' growth."""
    own = cpu_seconds(after) - cpu_seconds(before)
    reaped = (after.children_user + after.children_system) - (
        before.children_user + before.children_system
    )
    reaped -= sum(cpu for pid, cpu in alive_before.items() if pid not in alive_after)
    live = sum(cpu - alive_before.get(pid, 0.0) for pid, cpu in alive_after.items())
    return own + reaped + live
