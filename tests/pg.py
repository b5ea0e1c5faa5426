"""A throwaway PostgreSQL 15 cluster for the tests: one per session, on a free port.

initdb and postgres refuse to run as root, so as root the cluster belongs to the
`postgres` user (`runuser`). The tests get a database and a role of their own that
logs in over TCP with a password, as a daemon would; each test takes a fresh schema
of it (:meth:`Cluster.schema_dsn`). `make postgres` installs the binaries.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

BINARIES = Path(os.environ.get("BATCHD_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
DATABASE = "batchd_tests"
ROLE = "batchd_tests"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.sockets = root / "sockets"
        self.port = _free_port()
        self.password = secrets.token_hex(16)
        self.as_owner: list[str] = []
        if os.geteuid() == 0:
            self.as_owner = ["runuser", "-u", "postgres", "--"]
            shutil.chown(root, "postgres", "postgres")
        self.sockets.mkdir()
        if self.as_owner:
            shutil.chown(self.sockets, "postgres", "postgres")

    @property
    def dsn(self) -> str:
        return f"postgresql://{ROLE}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"

    def schema_dsn(self, schema: str) -> str:
        """The tests' database with `schema` first on the search path (asyncpg passes the
        DSN's unknown parameters on as server settings)."""
        return f"{self.dsn}?search_path={schema}"

    def _run(self, *command: str, stdin: str | None = None) -> None:
        done = subprocess.run(
            [*self.as_owner, *command],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=self.root,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {done.stdout}{done.stderr}")

    def start(self) -> None:
        self._run(
            str(BINARIES / "initdb"),
            "-D",
            str(self.data),
            "--username=postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
        )
        self.serve()
        self.sql(
            f"CREATE ROLE {ROLE} LOGIN PASSWORD '{self.password}';"
            f"CREATE DATABASE {DATABASE} OWNER {ROLE};"
        )

    @contextlib.contextmanager
    def fresh_schema(self) -> Iterator[str]:
        """A DSN whose tables go to a new, empty schema, dropped afterwards."""
        schema = f"test_{secrets.token_hex(6)}"
        self.sql(f"CREATE SCHEMA {schema} AUTHORIZATION {ROLE}", DATABASE)
        try:
            yield self.schema_dsn(schema)
        finally:
            self.sql(f"DROP SCHEMA {schema} CASCADE", DATABASE)

    def sql(self, script: str, database: str = "postgres") -> None:
        """Run `script` as the superuser, over the cluster's socket."""
        self._run(
            str(BINARIES / "psql"),
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            str(self.sockets),
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            database,
            stdin=script,
        )

    def serve(self) -> None:
        """Start the server on the cluster's data and port: at first, and again after
        :meth:`shut_down`."""
        settings = f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c fsync=on"
        log = str(self.root / "server.log")
        self._pg_ctl("-l", log, "-o", settings, "-w", "start")

    def shut_down(self, mode: str = "fast") -> None:
        """Stop the server as an operator would; in `fast` mode its sessions are cut and
        their open transactions rolled back. :meth:`serve` starts it again."""
        self._pg_ctl("-m", mode, "-w", "stop")

    def restart(self, mode: str = "fast") -> None:
        """Stop the server (sessions cut, as in :meth:`shut_down`) and start it again.
        Not `pg_ctl restart`: its server would hold this process's output pipes open."""
        self.shut_down(mode)
        self.serve()

    def _pg_ctl(self, *arguments: str) -> None:
        self._run(str(BINARIES / "pg_ctl"), "-D", str(self.data), *arguments)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(str(BINARIES / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")

    def listen_also(self, address: str, network: str) -> None:
        """Listen on `address` as well, and let the tests' role log in from `network`
        (a CIDR) with its password; restarts the server."""
        with (self.data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host {DATABASE} {ROLE} {network} scram-sha-256\n")
        self.shut_down()
        settings = (
            f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1,{address} -c fsync=on"
        )
        self._pg_ctl("-l", str(self.root / "server.log"), "-o", settings, "-w", "start")


def _unavailable() -> str | None:
    """Why no cluster can be started here, or None when one can."""
    if (BINARIES / "postgres").exists():
        return None
    return (
        f"{BINARIES}/postgres is missing: "
        "run `make postgres` as root (apt-get install postgresql-15)"
    )


@contextlib.contextmanager
def cluster() -> Iterator[Cluster]:
    """A started cluster, stopped and deleted afterwards whatever happened. Skips (saying
    why) when the binaries are missing, except as root or on CI, where it fails: there
    `make postgres` installs them, and the backend must not go untested."""
    reason = _unavailable()
    if reason is not None:
        if os.geteuid() == 0 or os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="batchd-pg-"))
    try:
        running = Cluster(root)
        try:
            running.start()
            yield running
        finally:
            running.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
