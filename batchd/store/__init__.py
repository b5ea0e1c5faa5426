"""The durable queue behind a narrow interface (see ``base.Store``)."""

from __future__ import annotations

from pathlib import Path

from batchd.observe.metrics import Metrics
from batchd.store.base import Store
from batchd.store.sqlite import SqliteStore


def open_store(state_dir: Path, synchronous: str, metrics: Metrics | None = None) -> Store:
    from batchd.constants import DB_FILENAME

    return SqliteStore(state_dir / DB_FILENAME, synchronous=synchronous, metrics=metrics)


__all__ = ["SqliteStore", "Store", "open_store"]
