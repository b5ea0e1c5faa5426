"""The Python client for the batchd HTTP API (standard library only).

It must import inside any handler's interpreter, so it uses urllib and nothing else; even
:meth:`Client.deploy` packs with :mod:`batchd.packing`, which is standard library too. A
bottom module: of batchd it imports only ``constants``, ``statuses``, ``urls``, ``transport``
and ``reconnect``, and ``packing`` and ``errors`` when it deploys.
Inside a worker, ``BATCHD_URL`` points at the daemon that runs it::

    import batchd

    client = batchd.client()
    job = client.submit("hello", {"item_list": {"items": [1, 2, 3], "batch_size": 2}})
    status = client.wait("hello", job["job_id"])
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import time
import types
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from batchd.constants import DEFAULT_LISTEN, ENV_TOKEN, ENV_URL
from batchd.reconnect import Notify, Outage
from batchd.reconnect import reconnect_timeout as reconnect_timeout_of

# The status vocabulary, part of the client's API (stdlib only, like the client).
from batchd.statuses import ACTIVE_STATUSES as ACTIVE_STATUSES
from batchd.statuses import TERMINAL_STATUSES as TERMINAL_STATUSES

# Part of the client's API: its errors, and the URL of a daemon on a Unix socket.
from batchd.transport import SERVE_HINT as SERVE_HINT
from batchd.transport import BatchdError as BatchdError
from batchd.transport import DaemonLost as DaemonLost
from batchd.transport import Transport
from batchd.urls import checked_url
from batchd.urls import unix_socket_url as unix_socket_url

DEFAULT_URL = f"http://{DEFAULT_LISTEN}"
DEFAULT_TIMEOUT = 60.0
DEFAULT_POLL_INTERVAL = 0.5
# Asked for by a deploy that shows progress: pip's lines, then the outcome (JSON lines).
DEPLOY_PROGRESS_TYPE = "application/x-ndjson"
JobStatus = dict[str, Any]
Record = dict[str, Any]
# What the logs route adds to each record when asked for a cursor (see observe.joblogs).
LOG_CURSOR_KEY = "log_cursor"


class WaitTimeout(BatchdError, TimeoutError):
    """:meth:`Client.wait` gave up (status 408); ``job_status`` is the last one seen."""

    def __init__(self, message: str, job_status: JobStatus) -> None:
        super().__init__(408, message, "timeout")
        self.job_status = job_status


class Client(Transport):
    """One daemon. `url` and `token` default to ``BATCHD_URL`` and ``BATCHD_TOKEN``; a URL
    without an http://, https:// or http+unix:// scheme is a ValueError at once.
    `reconnect_timeout` (default ``BATCHD_RECONNECT_TIMEOUT``, else 300 s) is how long
    :meth:`wait` and a followed log wait for a daemon that went away."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        reconnect_timeout: float | None = None,
    ) -> None:
        self.url = checked_url(url or os.environ.get(ENV_URL) or DEFAULT_URL)
        self.token = token if token is not None else os.environ.get(ENV_TOKEN) or None
        self.timeout = timeout
        self.reconnect_timeout = reconnect_timeout_of(reconnect_timeout)

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # -- APIs --------------------------------------------------------------------------

    def deploy(
        self,
        project_dir: str | Path,
        max_bytes: int | None = None,
        check: bool = True,
        config: str | Path | None = None,
        name: str | None = None,
        progress: Callable[[str], None] | None = None,
        config_text: bytes | None = None,
    ) -> dict[str, Any]:
        """Pack and upload a project folder; returns the API summary (name, version, files,
        ``warnings``), or ``{"apis": [summary, ...]}`` when its config defines several.

        The config is batchd.toml, else cortex.yaml or cortex.yml (a Cortex project, which
        the daemon translates), or `config`: a file at the top of the folder. `name` deploys
        only that API of a config that defines several. What the server would refuse (no
        config, no handler file, over `max_bytes`) is refused here first where it can be;
        an unreadable folder raises OSError. With `check` (the default) the daemon imports
        the Handler before recording the version, and a Handler that does not import is a
        BatchdError 422 holding its traceback. A project with a requirements.txt gets its
        venv built first; `progress` is called with each line pip writes meanwhile. The call
        waits as long as the daemon builds (no timeout). `config_text` is a config given in
        code, sent as `config` (default batchd.toml) in place of the folder's config files.
        """
        from batchd import packing
        from batchd.errors import DomainError
        from batchd.http.errors import status_of

        root = Path(project_dir)
        if config_text is not None:
            config_name: str | None = packing.PROJECT_CONFIG if config is None else str(config)
        else:
            config_name = None if config is None else _config_name(root, Path(config))
        limit = packing.DEFAULT_MAX_PROJECT_BYTES if max_bytes is None else max_bytes
        try:
            archive = packing.pack_project(root, limit, config=config_name, config_text=config_text)
        except DomainError as exc:
            raise BatchdError(status_of(exc), exc.message, exc.field) from None
        query = {} if check else {"check": "false"}
        query.update(
            {key: value for key, value in (("config", config_name), ("name", name)) if value}
        )
        accept = "application/json" if progress is None else DEPLOY_PROGRESS_TYPE
        response = self._open(
            "POST",
            "/apis",
            body=archive,
            content_type="application/gzip",
            query=query or None,
            accept=accept,
            timeout=None,
        )
        if response.headers.get_content_type() != DEPLOY_PROGRESS_TYPE:
            api: dict[str, Any] = self._read_json(response)
            return api
        for record in self._records(response):
            if "progress" in record:
                assert progress is not None
                progress(str(record["progress"]))
            elif "result" in record:
                result: dict[str, Any] = record["result"]
                return result
            elif "error" in record:
                error = record["error"]
                raise BatchdError(record["status"], str(error["message"]), error.get("field"))
        raise BatchdError(0, f"lost the connection to batchd at {self.url} while it deployed")

    def list_apis(self) -> list[dict[str, Any]]:
        apis: list[dict[str, Any]] = self._json("GET", "/apis")["apis"]
        return apis

    def get_api(self, api_name: str) -> dict[str, Any]:
        """The API summary plus its ``versions``, newest first."""
        api: dict[str, Any] = self._json("GET", f"/apis/{_quote(api_name)}")
        return api

    def delete(self, api_name: str) -> dict[str, Any]:
        """Stop the API's jobs and remove it: ``{"message", "stopped_jobs"}``."""
        answer: dict[str, Any] = self._json("DELETE", f"/apis/{_quote(api_name)}")
        return answer

    # -- jobs --------------------------------------------------------------------------

    def submit(
        self, api_name: str, job: Mapping[str, Any] | bytes, dry_run: bool = False
    ) -> dict[str, Any]:
        """Submit a job (a dict, or a JSON body as bytes); returns the job spec.

        With `dry_run` nothing is stored and the answer is a report
        (``total_batch_count``, ``item_count``, ...).
        """
        body = job if isinstance(job, bytes) else json.dumps(job).encode()
        spec: dict[str, Any] = self._json(
            "POST",
            _endpoint(api_name),
            body=body,
            content_type="application/json",
            query={"dryRun": "true"} if dry_run else None,
        )
        return spec

    def get_job(self, api_name: str, job_id: str) -> dict[str, Any]:
        """``{"job_status", "endpoint", "api_spec"}`` for one job."""
        answer: dict[str, Any] = self._json("GET", _endpoint(api_name), query={"jobID": job_id})
        return answer

    def list_jobs(
        self, api_name: str, limit: int = 100, before: str | None = None
    ) -> list[JobStatus]:
        """The API's jobs' statuses, newest first; after `before` (a job id) for the next
        page."""
        query = {"limit": str(limit)}
        if before is not None:
            query["before"] = before
        jobs: list[JobStatus] = self._json("GET", _endpoint(api_name), query=query)["jobs"]
        return jobs

    def list_all_jobs(
        self,
        api_name: str | None = None,
        statuses: Iterable[str] | None = None,
        limit: int = 100,
        before: str | None = None,
    ) -> list[JobStatus]:
        """Every API's jobs (or `api_name`'s), newest first, of `statuses` only when given:
        the daemon filters them (``GET /jobs``, at most 1000 a page; `before` a job id)."""
        query = {"limit": str(limit)}
        if api_name is not None:
            query["api"] = api_name
        if statuses is not None:
            query["status"] = ",".join(sorted(statuses))
        if before is not None:
            query["before"] = before
        jobs: list[JobStatus] = self._json("GET", "/jobs", query=query)["jobs"]
        return jobs

    def stop_job(self, api_name: str, job_id: str) -> dict[str, Any]:
        """Stop a job (409 if it has ended): ``{"message": "stopped job <id>"}``."""
        answer: dict[str, Any] = self._json("DELETE", _endpoint(api_name), query={"jobID": job_id})
        return answer

    def pause_job(self, api_name: str, job_id: str) -> dict[str, Any]:
        """Pause a job: its leased batches finish, nothing more is leased (409 if it has
        ended). Returns its status, ``paused``."""
        return self._pause(f"{_endpoint(api_name)}/pause", {"jobID": job_id})

    def resume_job(self, api_name: str, job_id: str) -> dict[str, Any]:
        """Resume a paused job; returns its status."""
        return self._pause(f"{_endpoint(api_name)}/resume", {"jobID": job_id})

    def pause_api(self, name: str) -> dict[str, Any]:
        """Pause every job of the API, and those submitted until it is resumed:
        ``{"message", "paused", "jobs"}``."""
        return self._pause(f"/apis/{_quote(name)}/pause", None)

    def resume_api(self, name: str) -> dict[str, Any]:
        """Resume the API's jobs (one paused on its own stays paused)."""
        return self._pause(f"/apis/{_quote(name)}/resume", None)

    def _pause(self, path: str, query: dict[str, str] | None) -> dict[str, Any]:
        answer: dict[str, Any] = self._json("POST", path, query=query)
        return answer

    def status(self) -> dict[str, Any]:
        """The daemon: version, workers, GPUs, disk use of the state dir."""
        status: dict[str, Any] = self._json("GET", "/status")
        return status

    def workers(self) -> dict[str, Any]:
        """Live workers with their memory and CPU use, and the last worker exits."""
        workers: dict[str, Any] = self._json("GET", "/workers")
        return workers

    def prune(self, dry_run: bool = False) -> dict[str, Any]:
        """Prune finished jobs past the retention period (or, dry, list them)."""
        report: dict[str, Any] = self._json(
            "POST", "/admin/prune", query={"dryRun": "true" if dry_run else "false"}
        )
        return report

    def retry(self, api_name: str, job_id: str) -> dict[str, Any]:
        """Submit the job's dead-lettered batches as a new job; returns its spec."""
        spec: dict[str, Any] = self._json(
            "POST", f"{_endpoint(api_name)}/retry", query={"jobID": job_id}
        )
        return spec

    def results(self, api_name: str, job_id: str) -> Iterator[Record]:
        """``{"batch_id", "result"}`` per batch that returned something."""
        return self._job_records(api_name, job_id, "results")

    def failed(self, api_name: str, job_id: str) -> Iterator[Record]:
        """Dead-lettered batches, each with its payload, attempts, error and traceback."""
        return self._job_records(api_name, job_id, "failed")

    def _job_records(self, api_name: str, job_id: str, which: str) -> Iterator[Record]:
        return self._stream(f"{_endpoint(api_name)}/{which}", {"jobID": job_id}, self.timeout)

    def stream_job_logs(
        self,
        api_name: str,
        job_id: str,
        follow: bool = False,
        level: str | None = None,
        batch_id: str | None = None,
        tail: int | None = None,
        reconnect_timeout: float | None = None,
        on_reconnect: Notify | None = None,
    ) -> Iterator[Record]:
        """The job's log records (the last `tail` only, when given); with `follow`, new
        ones as they come until the job ends. A followed log rides out a daemon restart:
        it reconnects as :meth:`wait` does and goes on just after the last record it
        yielded (no record twice, none missed)."""
        query = {"jobID": job_id}
        for key, value in (("level", level), ("batchID", batch_id), ("tail", tail)):
            if value is not None:
                query[key] = str(value)
        path = f"{_endpoint(api_name)}/logs"
        if not follow:
            return self._stream(path, query, timeout=self.timeout)
        query.update(follow="true", cursor="true")
        outage = Outage(self._reconnect_timeout(reconnect_timeout), on_reconnect)
        try:
            # Opened now, so a 404 is raised by the call, not by the first next().
            first: http.client.HTTPResponse | None = self._open(
                "GET", path, query=query, timeout=None
            )
        except BatchdError as exc:
            if not exc.transient or not outage.timeout:
                raise
            first = None
        return self._follow(api_name, job_id, query, first, outage)

    def _follow(
        self,
        api_name: str,
        job_id: str,
        query: dict[str, str],
        response: http.client.HTTPResponse | None,
        outage: Outage,
    ) -> Iterator[Record]:
        path = f"{_endpoint(api_name)}/logs"
        # Set once the job was seen ended: the stream opened after that is the last one.
        ended = False
        while True:
            try:
                if response is None:
                    # A followed job may stay quiet for hours: no read timeout.
                    response = self._open("GET", path, query=query, timeout=None)
                    outage.over(backoff_too=False)
                for record in self._records(response):
                    if LOG_CURSOR_KEY in record:
                        query.pop("tail", None)
                        query["after"] = str(record.pop(LOG_CURSOR_KEY))
                    outage.tries = 0
                    yield record
                response = None
                if ended:
                    return
                # A clean end: the job ended, or the daemon closed the stream to stop.
                # Once ended, one more read from the cursor takes what came meanwhile.
                ended = self.get_job(api_name, job_id)["job_status"]["status"] in (
                    TERMINAL_STATUSES
                )
                if not ended:
                    self._ride_out(outage, BatchdError(503, "the daemon closed the log stream"))
            except BatchdError as exc:
                response = None
                self._ride_out(outage, exc)

    def wait(
        self,
        api_name: str,
        job_id: str,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        timeout: float | None = None,
        progress: Callable[[JobStatus], object] | None = None,
        reconnect_timeout: float | None = None,
        on_reconnect: Notify | None = None,
    ) -> JobStatus:
        """Poll until the job ends and return its final job_status.

        `progress` is called with every status polled, the final one included;
        past `timeout` seconds :class:`WaitTimeout` is raised. A daemon that cannot be
        reached or answers 502/503/504 is tried again with a growing delay (after its
        Retry-After at the earliest), `on_reconnect` told `(reason, seconds left)` before
        each try and `(None, 0)` once it answers; after `reconnect_timeout` seconds of
        that (default: the client's), or at `timeout`, :class:`DaemonLost` is raised.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        limit = self._reconnect_timeout(reconnect_timeout)
        outage = Outage(limit, on_reconnect, deadline=deadline)
        while True:
            try:
                status: JobStatus = self.get_job(api_name, job_id)["job_status"]
            except BatchdError as exc:
                self._ride_out(outage, exc)
                continue
            outage.over()
            if progress is not None:
                progress(status)
            if status["status"] in TERMINAL_STATUSES:
                return status
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"job {job_id} still {status['status']} after {timeout}s", status)
            pause = poll_interval
            if deadline is not None:
                pause = max(0.0, min(pause, deadline - time.monotonic()))
            time.sleep(pause)

    def _reconnect_timeout(self, value: float | None) -> float:
        return self.reconnect_timeout if value is None else reconnect_timeout_of(value)


def _endpoint(api_name: str) -> str:
    return f"/batch/{_quote(api_name)}"


def _config_name(root: Path, config: Path) -> str:
    """A config file named as a path inside `root` (or its name alone) as its name there."""
    if len(config.parts) > 1 and config.resolve().parent == root.resolve():
        return config.name
    return str(config)


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def client(url: str | None = None, token: str | None = None) -> Client:
    """Same as :func:`batchd.client`."""
    return Client(url=url, token=token)


class _CallableModule(types.ModuleType):
    """Importing this module sets the package attribute ``batchd.client`` to the module,
    hiding the ``batchd.client()`` function; so the module answers that call itself."""

    def __call__(self, url: str | None = None, token: str | None = None) -> Client:
        return client(url=url, token=token)


sys.modules[__name__].__class__ = _CallableModule
