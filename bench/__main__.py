"""python -m bench [--quick] [--runs N] [--only W1,...] [--out PATH]

Runs the workloads against batchd of this checkout (and its peers) and writes RESULTS.md.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import ModuleType

from bench import (
    admission,
    huey_peer,
    latency,
    memory,
    pg_driver,
    report,
    scale,
    status_load,
    sync_modes,
    w1_batch100,
    w1_drain,
    w2_work,
    w3_spread,
    w4_model,
)
from bench.common import FULL, QUICK, Context, Result, progress

WORKLOADS: list[ModuleType] = [
    w1_drain,
    w1_batch100,
    sync_modes,
    w2_work,
    admission,
    latency,
    memory,
    status_load,
    # The scale section (PostgreSQL): `--only scale` runs all three.
    scale,
    pg_driver,
    w3_spread,
    w4_model,
]
DEFAULT_OUT = Path(__file__).resolve().parent / "RESULTS.md"


def parse_args(argv: list[str]) -> argparse.Namespace:
    keys = ", ".join(module.KEY for module in WORKLOADS) + "; or scale (the PostgreSQL ones)"
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 run (a smoke test)")
    parser.add_argument("--runs", type=int, help="runs per workload (default 3; 1 with --quick)")
    parser.add_argument("--only", help=f"comma-separated workloads, of: {keys}")
    parser.add_argument(
        "--out",
        type=Path,
        help=f"report path (default {DEFAULT_OUT.relative_to(DEFAULT_OUT.parent.parent)}; "
        "with --quick, stdout only)",
    )
    parser.add_argument("--no-huey", action="store_true", help="skip the huey peer")
    parser.add_argument("--keep", action="store_true", help="keep the temp dirs (logs)")
    args = parser.parse_args(argv)
    if args.out is None and not args.quick:
        args.out = DEFAULT_OUT
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def select(only: str | None) -> list[ModuleType]:
    if not only:
        return WORKLOADS
    wanted = {key.strip().lower() for key in only.split(",") if key.strip()}
    known = {name.lower() for module in WORKLOADS for name in _names(module)}
    unknown = wanted - known
    if unknown:
        raise SystemExit(f"unknown workload(s): {', '.join(sorted(unknown))}")
    return [m for m in WORKLOADS if wanted & {name.lower() for name in _names(m)}]


def _names(module: ModuleType) -> tuple[str, ...]:
    """A workload's key, and its group's (`scale`) where it has one."""
    return (module.KEY, getattr(module, "GROUP", module.KEY))


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM (and SIGINT where the shell left it ignored) unwinds like Ctrl-C, so every
    # daemon, worker and huey consumer this run started is killed on the way out.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    args = parse_args(sys.argv[1:] if argv is None else argv)
    modules = select(args.only)
    sizes = QUICK if args.quick else FULL
    runs = args.runs or (1 if args.quick else 3)
    use_huey = not args.no_huey and huey_peer.available()
    workdir = Path(tempfile.mkdtemp(prefix="batchd-bench-"))
    ctx = Context(sizes=sizes, runs=runs, quick=args.quick, huey=use_huey, workdir=workdir)
    started, clock, load_before = report.now(), time.monotonic(), report.load_average()
    progress(
        f"bench: {', '.join(m.KEY for m in modules)}; {'quick' if args.quick else 'full'} sizes, "
        f"{runs} run(s); huey {'on' if use_huey else 'off'}; temp dir {workdir}"
    )
    results: list[Result] = []
    try:
        for module in modules:
            begun = time.monotonic()
            progress(f"{module.KEY}: {module.TITLE}")
            try:
                result: Result = module.run(ctx)
            except Exception as exc:
                traceback.print_exc()
                result = Result(module.KEY, module.TITLE, "", error=f"{type(exc).__name__}: {exc}")
            result.seconds = time.monotonic() - begun
            results.append(result)
            progress(f"{module.KEY}: done in {result.seconds:.0f} s")
            text = report.render(results, ctx, started, time.monotonic() - clock, load_before)
            if args.out is not None:
                # Rewritten after every workload: an interrupted run keeps what it measured.
                args.out.write_text(text)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.out is None:
        print(report.render(results, ctx, started, time.monotonic() - clock, load_before))
    else:
        progress(f"wrote {args.out}")
    progress(f"{(time.monotonic() - clock) / 60:.1f} min in all")
    for result in results:
        for target in result.targets:
            if target.bound is not None:
                progress(f"  {report.target_row(target)}")
    failed = [r.key for r in results if r.error]
    if failed:
        progress(f"FAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
