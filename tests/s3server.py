"""A real S3 server for the tests: moto's server mode on a free loopback port, as a
subprocess (nothing is mocked inside any process under test).

The session fixture ``s3_server`` (tests/conftest.py) yields one :class:`S3Server`:

- ``endpoint_url`` and ``env`` (AWS_ENDPOINT_URL and test credentials) for a daemon, a
  handler or a worker: boto3 picks them up as a real deployment would its own;
  ``write_env_file(path)`` writes them as a ``.env`` file;
- ``config`` and ``add_to_config(path)``: the daemon's ``[s3]`` section;
- ``client()`` (boto3, for the test's own setup) and ``bucket(...)``, which makes a fresh
  bucket holding the given objects, so tests sharing the server never see each other's.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from testkit.launcher import free_port

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REGION = "us-east-1"
START_TIMEOUT = 60.0


class S3Server:
    def __init__(self, port: int, log_path: Path) -> None:
        self.port = port
        self.log_path = log_path
        self.endpoint_url = f"http://127.0.0.1:{port}"
        # moto takes any key; these say that they are the tests' own.
        self.env: dict[str, str] = {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": "batchd-tests",
            "AWS_SECRET_ACCESS_KEY": "batchd-tests-secret",
            "AWS_DEFAULT_REGION": REGION,
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> dict[str, str]:
        """The daemon config's ``[s3]`` section for this server."""
        return {"endpoint_url": self.endpoint_url, "region": REGION}

    def add_to_config(self, path: Path) -> None:
        """Append the ``[s3]`` section to a daemon config file (after its top-level keys)."""
        lines = [f'{key} = "{value}"' for key, value in self.config.items()]
        with path.open("a", encoding="utf-8") as config:
            config.write("\n[s3]\n" + "\n".join(lines) + "\n")

    def write_env_file(self, path: Path) -> Path:
        """``env`` as a dotenv file (KEY=value lines), such as a project's ``.env``."""
        path.write_text("".join(f"{key}={value}\n" for key, value in self.env.items()))
        return path

    def client(self) -> S3Client:
        import boto3

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
        )

    def bucket(
        self, objects: Mapping[str, bytes | str] | None = None, name: str | None = None
    ) -> str:
        """A new bucket (a fresh name unless given) holding `objects` (key: content)."""
        bucket = name or f"batchd-{secrets.token_hex(6)}"
        client = self.client()
        client.create_bucket(Bucket=bucket)
        for key, content in (objects or {}).items():
            body = content.encode() if isinstance(content, str) else content
            client.put_object(Bucket=bucket, Key=key, Body=body)
        return bucket

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "MOTO_PORT": str(self.port)},
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"moto's S3 server did not start on port {self.port}:\n"
                    + self.log_path.read_text(errors="replace")[-2000:]
                )
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=2):
                return True
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


@contextlib.contextmanager
def s3_server(log_dir: Path) -> Iterator[S3Server]:
    server = S3Server(free_port(), log_dir / "moto-server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()
