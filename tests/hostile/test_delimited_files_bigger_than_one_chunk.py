"""Case 4: a delimited_files job whose batches, 4,096 to a chunk, make a chunk larger than
SQLite will store.

A ~1 GB input used to be admitted as one chunk of every batch (count-bound only) and got
a 500 from SQLite's 1e9-byte limit on a value. Chunks are bounded by bytes too now. At
this test's scale (14 MB, batches of 2.4 MB) the old single chunk still fits SQLite, so
the test holds the stored chunks to the bound itself, runs the job to the last item, and
checks that a refusal after several chunks were made leaves nothing behind. SQLite's own
refusal is reproduced with its limit lowered in tests/test_store.py
(test_a_job_larger_than_sqlites_value_limit_is_stored), and the memory bound is fault 12d.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

from batchd.constants import CHUNK_MAX_BYTES, DB_FILENAME
from tests.conftest import Daemon, wait_job
from tests.hostile.helpers import refused

ITEM_INDEX_HANDLER = """
class Handler:
    def __init__(self, config):
        pass

    def handle_batch(self, payload):
        return [item["i"] for item in payload]
"""
ITEMS = 24
BATCH_SIZE = 4
PAD_BYTES = 600_000


def write_items(path: Path, first: int, count: int) -> None:
    with path.open("w") as lines:
        for index in range(first, first + count):
            lines.write(json.dumps({"i": index, "pad": "x" * PAD_BYTES}) + "\n")


def chunk_sizes(daemon: Daemon) -> list[int]:
    with sqlite3.connect(f"file:{daemon.state_dir / DB_FILENAME}?mode=ro", uri=True) as conn:
        return [row[0] for row in conn.execute("SELECT length(payloads) FROM chunks")]


def test_delimited_files_bigger_than_one_chunk(
    make_daemon: Callable[..., Daemon], make_project: Callable[..., Path], inputs_dir: Path
) -> None:
    daemon = make_daemon(max_item_size=1024 * 1024)
    client = daemon.client
    client.deploy(make_project("index", ITEM_INDEX_HANDLER))
    write_items(inputs_dir / "a.jsonl", 0, ITEMS // 2)
    write_items(inputs_dir / "b.jsonl", ITEMS // 2, ITEMS // 2)
    job = {"delimited_files": {"paths": [str(inputs_dir)], "batch_size": BATCH_SIZE}}

    # Refused at the last line, after most chunks were made: no job, no chunk stored.
    with (inputs_dir / "b.jsonl").open("a") as lines:
        lines.write("{not json}\n")
    error = refused(client, "index", job)
    assert (error.status, error.field) == (422, "delimited_files"), error
    assert f"{inputs_dir / 'b.jsonl'}:{ITEMS // 2 + 1}" in error.message, error.message
    assert client.list_jobs("index") == [] and chunk_sizes(daemon) == []

    write_items(inputs_dir / "b.jsonl", ITEMS // 2, ITEMS // 2)
    spec = client.submit("index", job)
    assert spec["total_batch_count"] == ITEMS // BATCH_SIZE
    sizes = chunk_sizes(daemon)
    assert sum(sizes) > ITEMS * PAD_BYTES
    assert max(sizes) <= CHUNK_MAX_BYTES, sizes
    assert wait_job(client, "index", spec["job_id"])["status"] == "succeeded"
    results = [row["result"] for row in client.results("index", spec["job_id"])]
    assert sorted(index for batch in results for index in batch) == list(range(ITEMS))
