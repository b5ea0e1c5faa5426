"""Neighbour of case 8: a listing source over directories nested 1,200 deep.

The walk used to recurse once per level and hit Python's recursion limit: a 500. It
walks with a stack of its own now, and every file is found however deep it lies."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE, Daemon

# Past the interpreter's default recursion limit (1,000), within PATH_MAX (4,096 bytes).
DEPTH = 1200


@pytest.fixture
def deep(inputs_dir: Path) -> Iterator[Path]:
    """The innermost of DEPTH nested directories under the input root, made and removed
    one level at a time: Path.mkdir(parents=True) and shutil.rmtree recurse per level."""
    levels = [inputs_dir]
    for _ in range(DEPTH):
        levels.append(levels[-1] / "d")
        levels[-1].mkdir()
    yield levels[-1]
    for level in reversed(levels[1:]):
        for child in level.iterdir():
            child.unlink()
        level.rmdir()


@pytest.mark.parametrize("kind", ["file_path_lister", "delimited_files"])
def test_deeply_nested_input_directory(
    make_daemon: Callable[..., Daemon], inputs_dir: Path, deep: Path, kind: str
) -> None:
    client = make_daemon().client
    client.deploy(EXAMPLE)
    (inputs_dir / "top.jsonl").write_text("1\n")
    (deep / "bottom.jsonl").write_text("2\n")

    report = client.submit("hello", {kind: {"paths": [str(inputs_dir)], "batch_size": 1}}, True)

    assert report["matched_files"] == [str(deep / "bottom.jsonl"), str(inputs_dir / "top.jsonl")]
    assert report["total_batch_count"] == 2
