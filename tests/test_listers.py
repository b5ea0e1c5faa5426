"""delimited_files and file_path_lister end to end: files on disk, a daemon, real workers."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from batchd.client import BatchdError, Client
from tests.conftest import Daemon, wait_for, wait_job

Project = Callable[..., Path]

# Echoes each batch; for file_path_lister payloads it also reads every file it is given.
ECHO_HANDLER = """
import os

class Handler:
    def __init__(self, config):
        pass

    def handle_batch(self, payload):
        if all(isinstance(item, str) and os.path.isabs(item) for item in payload):
            return [[path, open(path).read()] for path in payload]
        return payload
"""


@pytest.fixture
def echo(daemon: Daemon, make_project: Project) -> Client:
    daemon.client.deploy(make_project("echo", ECHO_HANDLER))
    return daemon.client


def write_lines(path: Path, values: list[Any], blank_lines: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    separator = "\n\n" if blank_lines else "\n"
    path.write_text(separator.join(json.dumps(v) for v in values) + "\n", encoding="utf-8")
    return path


def run_job(client: Client, job: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Submit, wait for the end (workers reaped too), return the status and results by id."""
    job_id = client.submit("echo", job)["job_id"]
    status = wait_job(client, "echo", job_id)

    def reaped() -> bool:
        counts = client.get_job("echo", job_id)["job_status"]["worker_counts"]
        return bool(counts["succeeded"] + counts["failed"] >= status["workers"])

    # The worker's exit is recorded too: nothing is left half-way out at teardown.
    wait_for(reaped, what="workers to be reaped")
    results = {row["batch_id"]: row["result"] for row in client.results("echo", job_id)}
    return status, results


def refused(client: Client, job: dict[str, Any], dry_run: bool = False) -> BatchdError:
    with pytest.raises(BatchdError) as caught:
        client.submit("echo", job, dry_run=dry_run)
    return caught.value


def make_tree(root: Path, files: dict[str, str]) -> None:
    for relpath, content in files.items():
        target = root / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)


# --- delimited_files -----------------------------------------------------------------------


def test_delimited_files_batches_span_files_in_path_order(echo: Client, inputs_dir: Path) -> None:
    first = [{"id": 1, "text": "caf\u00e9"}, [1, [2, 3]], "three"]
    second = [4.5, None, {"nested": {"deep": True}}]
    # Listed out of order on purpose: files are read sorted by path.
    b = write_lines(inputs_dir / "b.jsonl", second, blank_lines=True)
    a = write_lines(inputs_dir / "a.jsonl", first)
    status, results = run_job(
        echo, {"delimited_files": {"paths": [str(b), str(a)], "batch_size": 4}}
    )
    assert status["status"] == "succeeded"
    assert status["total_batch_count"] == 2 and status["source"] == "delimited_files"
    job_id = status["job_id"]
    assert results == {
        f"{job_id}-1": [*first, second[0]],
        f"{job_id}-2": second[1:],
    }


def test_delimited_files_from_a_directory(echo: Client, inputs_dir: Path) -> None:
    write_lines(inputs_dir / "batch" / "part-0.jsonl", [0, 1, 2])
    write_lines(inputs_dir / "batch" / "part-1.jsonl", [3, 4])
    write_lines(inputs_dir / "batch" / "nested" / "part-2.jsonl", [5])
    status, results = run_job(
        echo,
        {
            "workers": 2,
            "delimited_files": {"paths": [str(inputs_dir / "batch")], "batch_size": 2},
        },
    )
    assert status["status"] == "succeeded" and status["total_batch_count"] == 3
    job_id = status["job_id"]
    # Sorted by full path: batch/nested/... comes before batch/part-0.
    assert results == {f"{job_id}-1": [5, 0], f"{job_id}-2": [1, 2], f"{job_id}-3": [3, 4]}


def test_delimited_files_accepts_s3_paths(echo: Client, inputs_dir: Path) -> None:
    path = write_lines(inputs_dir / "items.jsonl", ["x", "y", "z"])
    status, results = run_job(echo, {"delimited_files": {"s3_paths": [str(path)], "batch_size": 2}})
    job_id = status["job_id"]
    assert results == {f"{job_id}-1": ["x", "y"], f"{job_id}-2": ["z"]}


def test_delimited_files_bad_line_is_422_naming_file_and_line(
    echo: Client, inputs_dir: Path
) -> None:
    path = inputs_dir / "bad.jsonl"
    path.write_text('{"ok": 1}\n{broken\n')
    error = refused(echo, {"delimited_files": {"paths": [str(path)], "batch_size": 1}})
    assert error.status == 422 and error.field == "delimited_files"
    assert error.message.startswith(f"{path}:2: not valid JSON")
    assert echo.list_jobs("echo") == []


# --- file_path_lister ----------------------------------------------------------------------

TREE = {
    "data/a.txt": "A",
    "data/b.json": "B",
    "data/sub/c.txt": "C",
    "data/sub/deep/d.txt": "D",
    "data/sub/deep/e.tmp.txt": "E",
    "data/skip/f.txt": "F",
    "data/sub/skip/g.txt": "G",
    "data/notes.md": "H",
}


def test_file_path_lister_with_globstar_includes_and_excludes(
    echo: Client, inputs_dir: Path
) -> None:
    make_tree(inputs_dir, TREE)
    data = inputs_dir / "data"
    status, results = run_job(
        echo,
        {
            "file_path_lister": {
                "paths": [str(data)],
                "includes": ["**/*.txt", "**/*.json"],
                "excludes": ["**/skip/**", "**/*.tmp.txt"],
                "batch_size": 2,
            }
        },
    )
    assert status["status"] == "succeeded" and status["source"] == "file_path_lister"
    job_id = status["job_id"]
    assert results == {
        f"{job_id}-1": [[str(data / "a.txt"), "A"], [str(data / "b.json"), "B"]],
        f"{job_id}-2": [[str(data / "sub/c.txt"), "C"], [str(data / "sub/deep/d.txt"), "D"]],
    }


def test_globstar_in_the_middle_needs_a_folder_as_in_cortex(echo: Client, inputs_dir: Path) -> None:
    make_tree(inputs_dir, TREE)
    data = inputs_dir / "data"
    status, results = run_job(
        echo,
        {
            "file_path_lister": {
                "paths": [str(data)],
                "includes": [f"{data}/sub/**/*.txt"],
                "excludes": [f"{data}/**/e.*"],
                "batch_size": 10,
            }
        },
    )
    # Cortex's `**` is no path segment: `sub/**/*.txt` needs `/` on both sides, so it skips
    # sub/c.txt (gobwas/glob, as Cortex matched S3 keys).
    assert results == {
        f"{status['job_id']}-1": [
            [str(data / "sub/deep/d.txt"), "D"],
            [str(data / "sub/skip/g.txt"), "G"],
        ]
    }


def test_file_path_lister_accepts_s3_paths_and_files(echo: Client, inputs_dir: Path) -> None:
    make_tree(inputs_dir, TREE)
    data = inputs_dir / "data"
    status, results = run_job(
        echo,
        {
            "file_path_lister": {
                # A file given twice (directly and through its folder) is listed once.
                "s3_paths": [str(data / "notes.md"), str(data / "skip"), str(data / "skip/f.txt")],
                "batch_size": 1,
            }
        },
    )
    job_id = status["job_id"]
    assert results == {
        f"{job_id}-1": [[str(data / "notes.md"), "H"]],
        f"{job_id}-2": [[str(data / "skip/f.txt"), "F"]],
    }


def test_paths_and_s3_paths_together_is_422(echo: Client, inputs_dir: Path) -> None:
    error = refused(
        echo,
        {
            "file_path_lister": {
                "paths": [str(inputs_dir)],
                "s3_paths": [str(inputs_dir)],
                "batch_size": 1,
            }
        },
    )
    assert error.status == 422 and error.field == "file_path_lister.s3_paths"


def test_no_match_is_422(echo: Client, inputs_dir: Path) -> None:
    make_tree(inputs_dir, TREE)
    job = {
        "file_path_lister": {
            "paths": [str(inputs_dir)],
            "includes": ["**/*.csv"],
            "batch_size": 1,
        }
    }
    error = refused(echo, job)
    assert error.status == 422 and error.field == "file_path_lister.paths"
    assert "no files" in error.message
    assert echo.list_jobs("echo") == []


# --- what the daemon may read --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["file_path_lister", "delimited_files"])
def test_path_outside_input_roots_is_403_and_stores_nothing(
    echo: Client, inputs_dir: Path, tmp_path: Path, kind: str
) -> None:
    inside = write_lines(inputs_dir / "in.jsonl", [1])
    outside = write_lines(tmp_path / "outside" / "secret.jsonl", [2])
    error = refused(echo, {kind: {"paths": [str(inside), str(outside)], "batch_size": 1}})
    assert error.status == 403
    assert error.field == f"{kind}.paths[1]"
    assert error.message == f"{str(outside)!r} is outside the daemon's input_roots"
    assert echo.list_jobs("echo") == []


def test_dotdot_and_symlink_escapes_are_403(echo: Client, inputs_dir: Path, tmp_path: Path) -> None:
    outside = write_lines(tmp_path / "outside" / "secret.jsonl", [2])
    sneaky = f"{inputs_dir}/../outside/secret.jsonl"
    error = refused(echo, {"delimited_files": {"paths": [sneaky], "batch_size": 1}})
    assert error.status == 403 and sneaky in error.message
    (inputs_dir / "link").mkdir()
    os.symlink(outside.parent, inputs_dir / "link" / "out")
    error = refused(echo, {"file_path_lister": {"paths": [str(inputs_dir)], "batch_size": 1}})
    assert error.status == 403 and error.field == "file_path_lister.paths[0]"
    assert f"{inputs_dir / 'link' / 'out'}" in error.message and "links outside" in error.message
    assert echo.list_jobs("echo") == []


def test_relative_path_is_422(echo: Client) -> None:
    error = refused(echo, {"file_path_lister": {"paths": ["data/x.txt"], "batch_size": 1}})
    assert error.status == 422 and error.field == "file_path_lister.paths[0]"
    assert "not an absolute path" in error.message


@pytest.mark.parametrize("kind", ["file_path_lister", "delimited_files"])
def test_listers_are_403_without_input_roots(
    make_daemon: Callable[..., Daemon],
    make_project: Project,
    inputs_dir: Path,
    kind: str,
) -> None:
    daemon = make_daemon(input_roots=[])
    client = daemon.client
    client.deploy(make_project("echo", ECHO_HANDLER))
    path = write_lines(inputs_dir / "in.jsonl", [1])
    for dry_run in (True, False):
        error = refused(client, {kind: {"paths": [str(path)], "batch_size": 1}}, dry_run)
        assert error.status == 403 and error.field == f"{kind}.paths"
        assert error.message == (
            f"{kind} is disabled: reading local files needs `input_roots` in the daemon config"
        )
    assert client.list_jobs("echo") == []
    # item_list jobs do not need input_roots.
    job = client.submit("echo", {"item_list": {"items": [1], "batch_size": 1}})
    assert wait_job(client, "echo", job["job_id"])["status"] == "succeeded"
    wait_for(
        lambda: client.get_job("echo", job["job_id"])["job_status"]["worker_counts"]["succeeded"],
        what="the worker to be reaped",
    )


# --- dry runs ------------------------------------------------------------------------------


def test_dry_run_lists_the_matched_files_and_stores_nothing(echo: Client, inputs_dir: Path) -> None:
    make_tree(inputs_dir, TREE)
    data = inputs_dir / "data"
    report = echo.submit(
        "echo",
        {
            "file_path_lister": {
                "paths": [str(data)],
                "includes": ["**/deep/**"],
                "excludes": ["**/*.tmp.txt"],
                "batch_size": 1,
            }
        },
        dry_run=True,
    )
    assert report == {
        "dry_run": True,
        "api_name": "echo",
        "total_batch_count": 1,
        "item_count": 1,
        "matched_files": [str(data / "sub/deep/d.txt")],
    }
    assert echo.list_jobs("echo") == []


def test_delimited_dry_run_counts_items_and_files(echo: Client, inputs_dir: Path) -> None:
    a = write_lines(inputs_dir / "x" / "a.jsonl", list(range(5)))
    b = write_lines(inputs_dir / "x" / "b.jsonl", list(range(4)))
    write_lines(inputs_dir / "x" / "c.csv", [1])
    report = echo.submit(
        "echo",
        {
            "delimited_files": {
                "s3_paths": [str(inputs_dir / "x")],
                "includes": ["**/*.jsonl"],
                "batch_size": 4,
            }
        },
        dry_run=True,
    )
    assert report["matched_files"] == [str(a), str(b)]
    assert (report["item_count"], report["total_batch_count"]) == (9, 3)
    assert echo.list_jobs("echo") == []
