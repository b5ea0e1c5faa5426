"""The PostgreSQL server of the scale section: the tests' throwaway cluster (tests/pg.py),
made durable whatever the tests set: fsync and synchronous_commit on, so a commit waits
for its WAL flush as SQLite's synchronous = FULL waits for its fsync.

Everything the scale section measures on PostgreSQL (batchd nodes, the procrastinate peer,
the driver comparison) runs against one server per workload, each run in a fresh schema or
database of it, so no run finds another's rows.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.common import Result, cpu_seconds
from tests.pg import BINARIES, DATABASE, ROLE, Cluster

# Set on the server whatever its config file says; read back into the report.
DURABLE = {"fsync": "on", "synchronous_commit": "on"}
REPORTED = ("server_version", "fsync", "synchronous_commit", "wal_sync_method", "shared_buffers")


def missing(result: Result) -> bool:
    """Whether no server can be started here; if so, `result` says why (the other
    workloads' figures stand without it, as they do without huey)."""
    if (BINARIES / "postgres").exists():
        return False
    result.note(
        f"PostgreSQL is not installed ({BINARIES}/postgres is missing): no figures "
        "(`make postgres` installs PostgreSQL 15)."
    )
    return True


@dataclass
class Server:
    cluster: Cluster
    settings: dict[str, str]

    @property
    def dsn(self) -> str:
        """The bench role's database, as libpq and asyncpg take it."""
        return self.cluster.dsn

    @contextlib.contextmanager
    def schema(self) -> Iterator[str]:
        """A DSN (asyncpg's) whose tables go to a new, empty schema, dropped afterwards."""
        with self.cluster.fresh_schema() as dsn:
            yield dsn

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """A new, empty database of the bench role (a libpq URL), dropped afterwards."""
        name = f"bench_{secrets.token_hex(6)}"
        self.cluster.sql(f"CREATE DATABASE {name} OWNER {ROLE}")
        try:
            yield self.dsn.rsplit("/", 1)[0] + f"/{name}"
        finally:
            self.cluster.sql(f"DROP DATABASE {name} WITH (FORCE)")

    def cpu_seconds(self) -> float:
        """CPU time so far of the server: the postmaster and every process under it (the
        backends of live connections included)."""
        pid = int((self.cluster.data / "postmaster.pid").read_text().split()[0])
        total = 0.0
        with contextlib.suppress(psutil.Error):
            postmaster = psutil.Process(pid)
            for process in [postmaster, *postmaster.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += cpu_seconds(process.cpu_times())
        return total

    def describe(self) -> str:
        return ", ".join(f"{key} {self.settings.get(key, '?')}" for key in REPORTED)


def _show(cluster: Cluster, names: tuple[str, ...]) -> dict[str, str]:
    query = " UNION ALL ".join(f"SELECT '{name}', current_setting('{name}')" for name in names)
    done = subprocess.run(
        [
            *cluster.as_owner,
            str(BINARIES / "psql"),
            "-h",
            str(cluster.sockets),
            "-p",
            str(cluster.port),
            "-U",
            "postgres",
            "-d",
            DATABASE,
            "-AtF",
            "\t",
            "-c",
            query,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return dict(line.split("\t", 1) for line in done.stdout.splitlines() if "\t" in line)


@contextlib.contextmanager
def server() -> Iterator[Server]:
    """A started cluster, durable as :data:`DURABLE` says, stopped and deleted afterwards.
    Its directory is a temp dir of its own: the bench's is private to this user, and as
    root the cluster runs as `postgres`."""
    root = Path(tempfile.mkdtemp(prefix="batchd-bench-pg-"))
    cluster = Cluster(root)
    try:
        cluster.start()
        cluster.sql(
            "".join(f"ALTER SYSTEM SET {key} = {value};" for key, value in DURABLE.items())
            + "SELECT pg_reload_conf();"
        )
        settings = _show(cluster, REPORTED)
        for key, value in DURABLE.items():
            if settings.get(key) != value:
                raise RuntimeError(f"the bench's PostgreSQL has {key} = {settings.get(key)}")
        yield Server(cluster, settings)
    finally:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)
