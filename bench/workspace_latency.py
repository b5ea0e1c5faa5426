"""Workspaces: submission -> first handle_batch latency, this checkout against a baseline.

    python -m bench.workspace_latency --baseline DIR [--jobs 20] [--rounds 3]

DIR is another checkout (for example `git archive <commit> | tar -x -C DIR`). The latency
piece of bench/latency.py (1-item jobs one after another on a quiet daemon, no-op handler
that writes time.time() on its first call) runs for three projects: first_call as it is,
and first_call with about 32 MiB (max_project_size) of data as one file and as 1,000
files. Baseline and this checkout alternate within each round, so both see the same
machine. Also times one workspace copy (batchd.pool.workspace.copy_tree) of each snapshot.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from batchd.pool.workspace import copy_tree, remove_tree
from bench import common
from bench.common import PROJECTS, Daemon, percentile
from bench.latency import first_call_latencies

MiB = 1024 * 1024
# Under the client's and the daemon's 32 MiB, with room for handler.py and batchd.toml.
DATA_BYTES = 32 * MiB - 64 * 1024
SMALL_FILES = 1000


def make_projects(root: Path) -> dict[str, Path]:
    projects = {}
    for name in ("tiny", "one-32mib-file", "1000-files-32mib"):
        path = root / name
        shutil.copytree(PROJECTS / "first_call", path)
        projects[name] = path
    (projects["one-32mib-file"] / "model.bin").write_bytes(b"\1" * DATA_BYTES)
    many = projects["1000-files-32mib"] / "data"
    for index in range(SMALL_FILES):
        folder = many / f"d{index % 32}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{index}.py").write_bytes(b"#" * (DATA_BYTES // SMALL_FILES))
    return projects


@contextmanager
def checkout(repo: Path) -> Iterator[None]:
    """Daemons started inside run the batchd of `repo`."""
    saved = common.REPO
    common.REPO = repo
    try:
        yield
    finally:
        common.REPO = saved


def latencies(workdir: Path, project: Path, jobs: int) -> list[float]:
    with Daemon(workdir, "wslat") as daemon:
        api = str(daemon.client.deploy(project)["name"])
        return first_call_latencies(daemon, api, jobs)


def copy_ms(project: Path, workdir: Path, tries: int = 5) -> float:
    times = []
    for index in range(tries):
        target = workdir / f"copy{index}"
        started = time.perf_counter()
        copy_tree(project, target)
        times.append(time.perf_counter() - started)
        remove_tree(target)
    return sorted(times)[len(times) // 2] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.workspace_latency")
    parser.add_argument("--baseline", type=Path, required=True)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", help="comma-separated project names (default: all three)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-workspace-"))
    try:
        projects = make_projects(workdir)
        if args.only:
            projects = {k: v for k, v in projects.items() if k in args.only.split(",")}
        results: dict[tuple[str, str], list[float]] = {}
        for round_ in range(args.rounds):
            for name, project in projects.items():
                for label, repo in (("baseline", args.baseline.resolve()), ("this", common.REPO)):
                    with checkout(repo):
                        found = latencies(workdir, project, args.jobs)
                    results.setdefault((name, label), []).extend(found)
                    print(
                        f"round {round_ + 1} {name:18} {label:8} "
                        f"p50 {percentile(found, 50) * 1000:6.1f} ms",
                        flush=True,
                    )
        print("\nproject            checkout  p50 ms  p90 ms  (all rounds)")
        for (name, label), found in results.items():
            print(
                f"{name:18} {label:8} {percentile(found, 50) * 1000:7.1f} "
                f"{percentile(found, 90) * 1000:7.1f}"
            )
        print("\none workspace copy (copy_tree), median of 5:")
        for name, project in projects.items():
            print(f"{name:18} {copy_ms(project, workdir):7.1f} ms")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
