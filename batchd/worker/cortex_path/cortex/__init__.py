"""``import cortex; cortex.client()`` inside a handler, on batchd (standard library only).

Cortex's Python client drove its CLI; this one calls the daemon that runs the handler
(``BATCHD_URL``, and ``BATCHD_TOKEN`` when the daemon has tokens) with
:mod:`batchd.client`, and takes Cortex v0.35's arguments for what a Batch handler does:
``deploy``, ``get_api``, ``list_apis``, ``delete``, ``get_job``, ``stop_job``,
``stream_job_logs``, plus ``submit_job``. Cortex users submitted jobs with
``requests.post(client.get_api(name)["endpoint"], json=job)``; that endpoint is the
daemon's ``/batch/<name>``, so the same POST works where the daemon takes requests without
a token (otherwise add ``Authorization: Bearer $BATCHD_TOKEN``, or call ``submit_job``).
The environment name is accepted and ignored: there is one daemon.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar

from batchd.client import BatchdError
from batchd.client import Client as BatchdClient

from .exceptions import CortexBinaryException

# The config file a packed project carries; JSON is YAML, so the daemon reads it as one.
CORTEX_CONFIG = "cortex.yaml"
# What batchd's API summary holds beside the spec.
_NOT_SPEC = frozenset({"endpoint", "versions", "unchanged", "warnings"})
# Jobs get_api shows, as Cortex's did.
_RECENT_JOBS = 10

P = ParamSpec("P")
R = TypeVar("R")


def _cortex_errors(method: Callable[P, R]) -> Callable[P, R]:
    """A BatchdError raised as Cortex's CortexBinaryException (still a BatchdError)."""

    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except BatchdError as exc:
            if isinstance(exc, CortexBinaryException):
                raise
            raise CortexBinaryException(exc.status, exc.message, exc.field) from None

    return call


def client(env: str | None = None) -> Client:
    """A client of the daemon running this handler; `env` (a Cortex environment) is
    accepted and ignored."""
    return Client({"name": env or "default"})


def new_client(name: str, operator_endpoint: str) -> Client:
    """A client of the daemon at `operator_endpoint` (a batchd URL)."""
    return Client({"name": name, "operator_endpoint": operator_endpoint})


class Client:
    def __init__(self, env: Mapping[str, Any]) -> None:
        self.env = dict(env)
        self.env_name = str(env.get("name", "default"))
        self._batchd = BatchdClient(url=env.get("operator_endpoint"))

    @_cortex_errors
    def deploy(
        self,
        api_spec: Mapping[str, Any],
        project_dir: str | None = None,
        force: bool = True,
        wait: bool = False,
    ) -> dict[str, Any]:
        """Deploy `project_dir` as the API `api_spec` describes (one Cortex API spec, as in
        a cortex.yaml). The daemon answers once the API is ready, so `wait` changes
        nothing; an existing API always gets the new version (`force`)."""
        if project_dir is None:
            raise ValueError("`project_dir` is required: batchd deploys a project folder")
        # The spec replaces the folder's own config files, as Cortex's client took it.
        spec = json.dumps([dict(api_spec)]).encode()
        deployed = self._batchd.deploy(project_dir, config=CORTEX_CONFIG, config_text=spec)
        # One spec, one API (a config of several is answered as {"apis": [...]}).
        api = deployed["apis"][0] if "apis" in deployed else deployed
        name = api["name"]
        message = f"{name} is up to date" if api.get("unchanged") else f"created {name}"
        return {
            "api": self._api_response(api),
            "message": "\n".join([message, *api.get("warnings", [])]),
            "error": "",
        }

    @_cortex_errors
    def get_api(self, api_name: str) -> dict[str, Any]:
        """The API: ``spec``, ``endpoint`` (where jobs are POSTed), ``batch_job_statuses``
        (its most recent jobs) and ``api_versions``."""
        api = self._batchd.get_api(api_name)
        response = self._api_response(api)
        response["batch_job_statuses"] = self._batchd.list_jobs(api_name, limit=_RECENT_JOBS)
        response["api_versions"] = [
            {"api_id": str(version["version"]), "last_updated": version["created_at"]}
            for version in api.get("versions", [])
        ]
        return response

    @_cortex_errors
    def list_apis(self) -> list[dict[str, Any]]:
        """Every API: ``spec`` and ``endpoint``."""
        return [self._api_response(api) for api in self._batchd.list_apis()]

    @_cortex_errors
    def get_job(self, api_name: str, job_id: str) -> dict[str, Any]:
        """``{"job_status", "endpoint", "api_spec"}``, as Cortex answered."""
        job = self._batchd.get_job(api_name, job_id)
        job["endpoint"] = self._endpoint(api_name)
        return job

    @_cortex_errors
    def submit_job(self, api_name: str, job: Mapping[str, Any]) -> dict[str, Any]:
        """Submit a job (the body Cortex users POSTed to the endpoint); returns its spec."""
        return self._batchd.submit(api_name, job)

    @_cortex_errors
    def delete(self, api_name: str, keep_cache: bool = False) -> None:
        """Stop the API's jobs and remove it (`keep_cache` means nothing here)."""
        self._batchd.delete(api_name)

    @_cortex_errors
    def stop_job(self, api_name: str, job_id: str, keep_cache: bool = False) -> None:
        """Stop a job."""
        self._batchd.stop_job(api_name, job_id)

    @_cortex_errors
    def stream_job_logs(self, api_name: str, job_id: str) -> None:
        """Print the job's log records, one JSON object a line, until it ends."""
        for record in self._batchd.stream_job_logs(api_name, job_id, follow=True):
            print(json.dumps(record), flush=True)

    def _endpoint(self, api_name: str) -> str:
        return f"{self._batchd.url}/batch/{api_name}"

    def _api_response(self, api: Mapping[str, Any]) -> dict[str, Any]:
        spec = {key: value for key, value in api.items() if key not in _NOT_SPEC}
        spec["kind"] = "BatchAPI"
        return {"spec": spec, "endpoint": self._endpoint(api["name"])}
