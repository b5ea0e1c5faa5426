"""W2 real work: 20,000 items, batch_size 32, a handler burning 5 ms of CPU per item.

Ideal: both cores busy with handlers all along, items * 5 ms / 2. The CPU split comes from
psutil: the daemon's own cpu_times, and its children's (the workers the daemon reaped, plus
what those still alive at the end spent meanwhile). The machine's busy time minus those
(and the bench's own) is what other processes took meanwhile: on a shared machine it
explains a low efficiency.
"""

from __future__ import annotations

import time

import psutil

from batchd.client import TERMINAL_STATUSES
from bench.common import (
    WORKERS,
    Context,
    Daemon,
    Result,
    Target,
    chunks,
    cpu_seconds,
    job_body,
    load_handler,
    parse_iso,
    progress,
    ratio,
)

KEY = "W2"
TITLE = "W2 real work (5 ms CPU per item)"


def busy_cpu() -> float:
    """CPU seconds the whole machine has spent busy (every core, every process)."""
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    # guest time is already counted in user (and guest_nice in nice) on Linux.
    guest = getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)
    return float(sum(times) - idle - guest)


def limit_items_per_s(ctx: Context) -> float:
    """The burn Handler in a plain loop over a sample, scaled to 2 processes."""
    ms = ctx.sizes.w2_ms_per_item
    handler = load_handler("burn", {"ms_per_item": ms})
    items = list(range(ctx.sizes.limit_w2_items))
    start = time.perf_counter()
    for index, payload in enumerate(chunks(items, ctx.sizes.w2_batch_size)):
        handler.handle_batch(payload, str(index))
    return ratio(len(items), time.perf_counter() - start) * WORKERS


def run(ctx: Context) -> Result:
    n, size, ms = ctx.sizes.w2_items, ctx.sizes.w2_batch_size, ctx.sizes.w2_ms_per_item
    ideal = n * ms / 1000 / WORKERS
    result = Result(
        KEY,
        TITLE,
        f"{n:,} items, batch_size {size}, the handler burns {ms:g} ms of CPU per item "
        f"(busy loop on time.process_time), 2 workers; ideal = {n:,} x {ms:g} ms / 2 = "
        f"{ideal:.2f} s. Time from the POST to the job's end_time.",
    )
    body = job_body(list(range(n)), size, config={"ms_per_item": ms})
    for attempt in range(1, ctx.runs + 1):
        result.add(
            "limit: handler in a plain loop, x2 processes", "items/s", limit_items_per_s(ctx)
        )
        with Daemon(ctx.workdir, "w2") as daemon:
            api = daemon.deploy("burn")
            daemon.wait_idle()
            proc, me = daemon.ps(), psutil.Process()
            before, me_before, machine_before = proc.cpu_times(), me.cpu_times(), busy_cpu()
            base = daemon.cpu_of_descendants()
            submitted = time.time()
            job_id = str(daemon.submit(api, body)["job_id"])
            while True:
                status = daemon.status(api, job_id)
                if status["status"] in TERMINAL_STATUSES:
                    machine = busy_cpu() - machine_before
                    bench_cpu = cpu_seconds(me.cpu_times()) - cpu_seconds(me_before)
                    break
                time.sleep(0.2)
            if status["status"] != "succeeded":
                raise RuntimeError(f"the W2 job ended {status['status']}")
            end = parse_iso(status.get("end_time")) or time.time()
            daemon.wait_idle()
            after, alive = proc.cpu_times(), daemon.cpu_of_descendants()
        elapsed = end - submitted
        daemon_cpu = cpu_seconds(after) - cpu_seconds(before)
        # Workers the daemon reaped are in its children_* times (less what those already
        # alive at the start had spent); workers still alive at the end (a spare kept
        # between jobs, say) count what they spent since the start.
        reaped = (after.children_user + after.children_system) - (
            before.children_user + before.children_system
        )
        reaped -= sum(cpu for pid, cpu in base.items() if pid not in alive)
        workers_cpu = reaped + sum(cpu - base.get(pid, 0.0) for pid, cpu in alive.items())
        efficiency = ideal / elapsed
        # What everything else on the machine (other users' processes) took meanwhile.
        others = max(0.0, machine - daemon_cpu - workers_cpu - bench_cpu)
        progress(
            f"W2 run {attempt}/{ctx.runs}: {elapsed:.2f} s ({efficiency:.1%} of ideal); "
            f"cpu daemon {daemon_cpu:.2f} s, workers {workers_cpu:.2f} s, "
            f"other processes {others:.2f} s"
        )
        result.add("elapsed, POST to end", "s", elapsed, 2)
        result.add("batchd", "items/s", n / elapsed)
        result.add("efficiency: ideal / elapsed", "%", 100 * efficiency, 1)
        result.add("daemon CPU", "s", daemon_cpu, 2)
        result.add("workers CPU (handlers included)", "s", workers_cpu, 2)
        result.add(
            "daemon share of all CPU", "%", 100 * ratio(daemon_cpu, daemon_cpu + workers_cpu), 1
        )
        result.add(
            "worker overhead beyond the handler's 5 ms/item", "s", workers_cpu - n * ms / 1000, 2
        )
        result.add("CPU taken by other processes on the machine", "s", others, 2)
        result.add(
            "efficiency with that CPU taken out: ideal / (elapsed - other CPU / 2)",
            "%",
            100 * ratio(ideal, elapsed - others / WORKERS),
            1,
        )
    result.targets.append(
        Target(
            "W2 efficiency (ideal / elapsed)",
            result.median("efficiency: ideal / elapsed") / 100,
            ">=",
            0.95,
            "",
            3,
        )
    )
    return result
