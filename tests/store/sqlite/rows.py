"""Reading the SQLite file behind the store's back, to check how it keeps things."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def chunk_rows(path: Path, job_id: str) -> list[tuple[int, int]]:
    """(batches before the chunk, its length in bytes) of each of the job's chunks."""
    with sqlite3.connect(path) as conn:
        (key,) = conn.execute("SELECT key FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return conn.execute(
            "SELECT id - (? << 32), length(payloads) FROM chunks WHERE id >> 32 = ? ORDER BY id",
            (key, key),
        ).fetchall()
