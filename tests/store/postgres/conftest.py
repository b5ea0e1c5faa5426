"""The PostgreSQL backend's own tests: its schema, its migrations, its statements."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import pg


@pytest.fixture
def dsn(postgres_cluster: pg.Cluster) -> Iterator[str]:
    """A fresh schema of the session's cluster, dropped after the test."""
    with postgres_cluster.fresh_schema() as fresh:
        yield fresh
