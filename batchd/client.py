"""The Python client for the batchd HTTP API (standard library only).

It must import inside any handler's interpreter, so it uses urllib and nothing else.
Inside a worker, ``BATCHD_URL`` points at the daemon that runs it.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8780"
TERMINAL_STATUSES = frozenset(
    {
        "succeeded",
        "completed_with_failures",
        "worker_error",
        "worker_oom",
        "timed_out",
        "stopped",
        "enqueue_failed",
        "unexpected_error",
    }
)


class BatchdError(Exception):
    """Any failed request: the HTTP status (0 when unreachable) and the server's message."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.message = message
        self.field = field


class Client:
    def __init__(
        self, url: str | None = None, token: str | None = None, timeout: float = 60.0
    ) -> None:
        self.url = (url or os.environ.get("BATCHD_URL") or DEFAULT_URL).rstrip("/")
        self.token = token if token is not None else os.environ.get("BATCHD_TOKEN")
        self.timeout = timeout

    # -- APIs --------------------------------------------------------------------------

    def deploy(self, project_dir: str | Path, max_bytes: int = 32 * 1024 * 1024) -> Any:
        from batchd.project import pack_project  # needs the daemon's packages

        archive = pack_project(Path(project_dir), max_bytes)
        return self._json("POST", "/apis", body=archive, content_type="application/gzip")

    def list_apis(self) -> list[dict[str, Any]]:
        apis: list[dict[str, Any]] = self._json("GET", "/apis")["apis"]
        return apis

    def get_api(self, api_name: str) -> Any:
        return self._json("GET", f"/apis/{_quote(api_name)}")

    def delete(self, api_name: str) -> Any:
        return self._json("DELETE", f"/apis/{_quote(api_name)}")

    # -- jobs --------------------------------------------------------------------------

    def submit(self, api_name: str, job: dict[str, Any] | bytes, dry_run: bool = False) -> Any:
        body = job if isinstance(job, bytes) else json.dumps(job).encode()
        query = {"dryRun": "true"} if dry_run else None
        return self._json(
            "POST",
            f"/batch/{_quote(api_name)}",
            body=body,
            content_type="application/json",
            query=query,
        )

    def get_job(self, api_name: str, job_id: str) -> dict[str, Any]:
        status: dict[str, Any] = self._json(
            "GET", f"/batch/{_quote(api_name)}", query={"jobID": job_id}
        )
        return status

    def list_jobs(self, api_name: str, limit: int = 100) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = self._json(
            "GET", f"/batch/{_quote(api_name)}", query={"limit": str(limit)}
        )["jobs"]
        return jobs

    def stop_job(self, api_name: str, job_id: str) -> Any:
        return self._json("DELETE", f"/batch/{_quote(api_name)}", query={"jobID": job_id})

    def retry(self, api_name: str, job_id: str) -> Any:
        return self._json("POST", f"/batch/{_quote(api_name)}/retry", query={"jobID": job_id})

    def results(self, api_name: str, job_id: str) -> Iterator[dict[str, Any]]:
        return self._lines(f"/batch/{_quote(api_name)}/results", {"jobID": job_id})

    def failed(self, api_name: str, job_id: str) -> Iterator[dict[str, Any]]:
        return self._lines(f"/batch/{_quote(api_name)}/failed", {"jobID": job_id})

    def wait(
        self, api_name: str, job_id: str, poll_interval: float = 0.5, timeout: float | None = None
    ) -> dict[str, Any]:
        """Poll until the job reaches a terminal status; return its final job_status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status: dict[str, Any] = self.get_job(api_name, job_id)["job_status"]
            if status["status"] in TERMINAL_STATUSES:
                return status
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {status['status']} after {timeout}s")
            time.sleep(poll_interval)

    # -- transport ---------------------------------------------------------------------

    def _open(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str | None = None,
        query: dict[str, str] | None = None,
    ) -> Any:
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        request = urllib.request.Request(url, data=body, method=method)
        if content_type:
            request.add_header("Content-Type", content_type)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            raise _error_from(exc) from None
        except urllib.error.URLError as exc:
            raise BatchdError(0, f"cannot reach batchd at {self.url}: {exc.reason}") from None
        except (OSError, http.client.HTTPException) as exc:
            # Timeouts and dropped connections: still "cannot reach", never a traceback.
            raise BatchdError(0, f"cannot reach batchd at {self.url}: {exc}") from None

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        with self._open(method, path, **kwargs) as response:
            return json.loads(response.read())

    def _lines(self, path: str, query: dict[str, str]) -> Iterator[dict[str, Any]]:
        with self._open("GET", path, query=query) as response:
            for line in response:
                if line.strip():
                    yield json.loads(line)


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def _error_from(exc: urllib.error.HTTPError) -> BatchdError:
    raw = exc.read()
    try:
        error = json.loads(raw)["error"]
        return BatchdError(exc.code, str(error["message"]), error.get("field"))
    except (ValueError, KeyError, TypeError):
        return BatchdError(exc.code, raw.decode(errors="replace").strip() or str(exc.reason))


def client(url: str | None = None, token: str | None = None) -> Client:
    return Client(url=url, token=token)
