"""A deploy works with Debian 12's Python 3.11.2 tarfile, which lacks what 3.11.4 added.

3.11.4 brought extraction filters and TarInfo.replace() together. tests/test_systemd_real.py
deploys on the real 3.11.2 inside a Debian 12 container; this test takes both away from the
running interpreter so that every CI run, with or without a container, checks the same path.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchd.apis.archive import remove_snapshot, unpack_project

MiB = 1 << 20
HANDLER = b"class Handler:\n    def handle_batch(self, payload, batch_id):\n        return 1\n"
CONFIG = b'name = "hello"\n[handler]\npath = "handler.py"\n'
VALUES = b'{"labels": {}}\n'


def _tar_gz(*members: tuple[str, bytes | None, str]) -> bytes:
    """(name, data, hard link target) triples; data None makes a hard link."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data, target in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.linkname = tarfile.LNKTYPE, target
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def python_3_11_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(tarfile.TarInfo, "replace", raising=False)
    monkeypatch.setattr("batchd.apis.archive._HAS_FILTERS", False)
    monkeypatch.setattr("batchd.apis.archive._FILTER_ERRORS", ())


@pytest.fixture
def dest(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "v1"
    yield path
    if path.exists():
        remove_snapshot(path)


@pytest.mark.usefixtures("python_3_11_2")
def test_tar_of_dot_with_a_hard_link_deploys_without_tarinfo_replace(dest: Path) -> None:
    # `tar -czf - .` names members "./handler.py": the server renames them, and a hard link's
    # target with them.
    archive = _tar_gz(
        ("./batchd.toml", CONFIG, ""),
        ("./handler.py", HANDLER, ""),
        ("./values.json", VALUES, ""),
        ("./copy.json", None, "./values.json"),
    )
    deployed = unpack_project(archive, dest, MiB)
    assert deployed.files == ["copy.json", "handler.py", "values.json"]
    assert deployed.spec.handler.path == "handler.py"
    assert (dest / "handler.py").read_bytes() == HANDLER
    assert (dest / "copy.json").read_bytes() == VALUES
    assert (dest / "copy.json").stat().st_ino == (dest / "values.json").stat().st_ino
