"""Case 5: a delimited line of hundreds of MB without a newline, max_item_size 1 KiB.

The daemon used to read the whole line before checking its size (3.27 GB RSS for a 1 GiB
line). It must stop reading at the limit and answer 422 naming the file and the line.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import Daemon
from tests.hostile.helpers import ECHO_HANDLER, peak_rss_bytes, refused

MIB = 1024 * 1024
# Sparse: no disk blocks and no time to write, yet 256 MiB of line to whoever reads it.
LINE_BYTES = 256 * MIB
# Reading the line whole takes it twice over (bytes, then text); what is left is noise.
RSS_GROWTH_LIMIT = 64 * MIB


def test_delimited_line_longer_than_max_item_size(
    make_daemon: Callable[..., Daemon], make_project: Callable[..., Path], inputs_dir: Path
) -> None:
    daemon = make_daemon(max_item_size=1024)
    assert daemon.process is not None
    client = daemon.client
    client.deploy(make_project("echo", ECHO_HANDLER))
    path = inputs_dir / "huge.jsonl"
    with path.open("wb") as file:
        file.write(b'{"ok": 1}\n\n')
        file.truncate(file.tell() + LINE_BYTES)
    before = peak_rss_bytes(daemon.process.pid)

    error = refused(client, "echo", {"delimited_files": {"paths": [str(path)], "batch_size": 1}})

    grown = peak_rss_bytes(daemon.process.pid) - before
    assert (error.status, error.field) == (422, "delimited_files"), error
    assert grown < RSS_GROWTH_LIMIT, f"the daemon's peak RSS grew {grown / MIB:.0f} MiB"
    assert f"{path}:3" in error.message and "line 3" in error.message, error.message
    assert "max_item_size" in error.message, error.message
    assert client.list_jobs("echo") == []
