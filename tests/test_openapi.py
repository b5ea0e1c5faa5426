"""GET /openapi.json: a valid OpenAPI 3.1 document that describes every route, and that
real responses (and schemathesis against a live daemon) agree with."""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import jsonschema
import pytest
import schemathesis
from openapi_spec_validator import validate as validate_openapi
from pydantic import BaseModel

from batchd.client import Client
from batchd.http import openapi, schemas
from batchd.http.app import Services, build_app
from tests.conftest import EXAMPLE, Daemon, wait_for, wait_job

TOKEN = "openapi-test-token-0123456789"
HTTP_DIR = Path(openapi.__file__).parent

FAILING_HANDLER = """
import time


class Handler:
    def handle_batch(self, payload):
        if payload == [13]:
            raise ValueError("unlucky")
        if payload == ["sleep"]:
            time.sleep(60)
        print("handled", payload)
        return payload
"""


def fetch(
    daemon: Daemon, path: str, token: str | None = TOKEN, method: str = "GET"
) -> tuple[int, str, bytes]:
    request = urllib.request.Request(daemon.url + path, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def schema_validator(document: dict[str, Any], name: str) -> jsonschema.Draft202012Validator:
    """A validator for one component of the document, its references resolved in it."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    return jsonschema.Draft202012Validator(schema)


def response_schema(document: dict[str, Any], method: str, path: str, status: int) -> Any:
    content = document["paths"][path][method]["responses"][str(status)]["content"]
    return next(iter(content.values()))["schema"]


def check(document: dict[str, Any], model: type[BaseModel], value: Any) -> None:
    """`value` fits both the pydantic model and the published schema of that model."""
    model.model_validate(value)
    schema_validator(document, model.__name__).validate(value)


@pytest.fixture
def secured(make_daemon: Callable[..., Daemon], tmp_path: Path) -> Daemon:
    (tmp_path / "token").write_text(TOKEN)
    return make_daemon(token_file=str(tmp_path / "token"), max_workers=2)


# --- the document ---------------------------------------------------------------------------


def test_document_is_valid_openapi() -> None:
    document = openapi.document()
    validate_openapi(document)
    assert document["openapi"].startswith("3.1")
    # The job body is exactly the model the route validates with.
    from batchd.admission.job_body import JobSubmission

    body = document["paths"]["/batch/{api}"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"] == {"$ref": "#/components/schemas/JobSubmission"}
    generated = JobSubmission.model_json_schema(mode="validation")
    published = document["components"]["schemas"]["JobSubmission"]
    assert set(published["properties"]) == set(generated["properties"])
    assert "$defs" not in published
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def _app_routes() -> set[tuple[str, str]]:
    services = SimpleNamespace(config=SimpleNamespace(max_request_size=1024))
    app = build_app(cast(Services, services))
    routes = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("formatter") or info.get("path") or info.get("prefix")
        # aiohttp answers HEAD wherever it answers GET; HEAD is not described separately.
        if route.method == "HEAD" or route.handler.__module__ in openapi.UNDOCUMENTED_MODULES:
            continue
        routes.add((route.method.lower(), str(path)))
    return routes


def test_every_route_is_described_and_nothing_else() -> None:
    described = {
        (method, path) for path, item in openapi.document()["paths"].items() for method in item
    }
    routes = _app_routes()
    assert routes - described == set(), "routes missing from batchd/http/openapi.py"
    assert described - routes == set(), "operations in batchd/http/openapi.py with no route"


def test_every_query_parameter_read_is_described() -> None:
    """Query parameters that the routes read (by name, in batchd/http/) are all described."""
    pattern = re.compile(r'(?:request\.query\.get\(|_query\(\s*request,\s*)"(\w+)"')
    read = {
        name for source in HTTP_DIR.glob("*.py") for name in pattern.findall(source.read_text())
    }
    described = {
        param["name"]
        for item in openapi.document()["paths"].values()
        for operation in item.values()
        for param in operation.get("parameters", [])
        if param["in"] == "query"
    }
    assert read, "the pattern no longer finds query parameters; update it"
    assert read - described == set()


def test_served_document_is_public_and_the_same(secured: Daemon) -> None:
    status, content_type, raw = fetch(secured, "/openapi.json", token=None)
    assert status == 200 and content_type.startswith("application/json")
    assert json.loads(raw) == openapi.document()
    # Everything else still needs the token.
    status, _, raw = fetch(secured, "/status", token=None)
    assert status == 401
    check(openapi.document(), schemas.Error, json.loads(raw))


# --- real responses fit the models and the document -----------------------------------------


def test_real_responses_fit_the_document(
    secured: Daemon, make_project: Callable[..., Path]
) -> None:
    document = openapi.document()
    client = Client(secured.url, token=TOKEN)
    deployed = client.deploy(EXAMPLE)
    check(document, schemas.Deployed, deployed)
    client.deploy(make_project("flaky", FAILING_HANDLER))
    job = client.submit(
        "flaky",
        {"item_list": {"items": [1, 13, 2], "batch_size": 1}, "max_receive_count": 1},
    )
    check(document, schemas.JobSpec, job)
    final = wait_job(client, "flaky", job["job_id"])
    assert final["status"] == "completed_with_failures"

    def get(path: str, model: type[BaseModel], method: str = "GET") -> Any:
        status, content_type, raw = fetch(secured, path, method=method)
        assert status == 200, raw
        if content_type.startswith(openapi.NDJSON):
            lines = [json.loads(line) for line in raw.splitlines()]
            assert lines, path
            for line in lines:
                check(document, model, line)
            return lines
        body = json.loads(raw)
        check(document, model, body)
        return body

    job_id = job["job_id"]
    get("/status", schemas.StatusPage)
    get("/apis", schemas.ApiList)
    get("/apis/flaky", schemas.ApiDetail)
    get(f"/batch/flaky?jobID={job_id}", schemas.JobStatusResponse)
    get("/batch/flaky", schemas.JobList)
    get(f"/batch/flaky/results?jobID={job_id}", schemas.ResultLine)
    get(f"/batch/flaky/failed?jobID={job_id}", schemas.FailedLine)
    get(f"/batch/flaky/logs?jobID={job_id}", schemas.LogRecord)
    retried = get(f"/batch/flaky/retry?jobID={job_id}", schemas.JobSpec, "POST")
    assert retried["retry_of"] == job_id
    wait_job(client, "flaky", retried["job_id"])
    check(document, schemas.DryRunReport, client.submit("hello", _one_item(), dry_run=True))
    get("/admin/prune?dryRun=true", schemas.PruneReport, "POST")
    # A job with a live worker: the worker lists of /status and of the job status.
    running = client.submit("flaky", {"item_list": {"items": ["sleep"], "batch_size": 1}})
    path = f"/batch/flaky?jobID={running['job_id']}"
    wait_for(
        lambda: client.get_job("flaky", running["job_id"])["job_status"]["worker_details"],
        what="a live worker",
    )
    assert get(path, schemas.JobStatusResponse)["job_status"]["worker_details"]
    assert get("/status", schemas.StatusPage)["workers"]
    assert get(path, schemas.Message, "DELETE")["message"].startswith("stopped")
    status, _, raw = fetch(secured, path, method="DELETE")
    assert status == 409
    check(document, schemas.Error, json.loads(raw))
    get("/apis/flaky", schemas.DeletedApi, "DELETE")
    # The anyOf of GET /batch/{api} and POST /batch/{api} tell their two answers apart.
    for schema, one, other in (
        (response_schema(document, "get", "/batch/{api}", 200), "JobStatusResponse", "JobList"),
        (response_schema(document, "post", "/batch/{api}", 200), "JobSpec", "DryRunReport"),
    ):
        assert [ref["$ref"].rsplit("/", 1)[1] for ref in schema["anyOf"]] == [one, other]


def _one_item() -> dict[str, Any]:
    return {"item_list": {"items": [1], "batch_size": 1}}


# --- schemathesis against a live daemon -----------------------------------------------------

VICTIM = """
class Handler:
    def handle_batch(self, payload):
        return payload
"""


@pytest.fixture
def live_schema(secured: Daemon, make_project: Callable[..., Path]) -> Any:
    """The daemon's own /openapi.json, with real API names and job ids to draw from."""
    client = Client(secured.url, token=TOKEN)
    client.deploy(EXAMPLE)
    # DELETE /apis/{name} draws only this one, so `hello` stays for the other operations.
    client.deploy(make_project("victim", VICTIM))
    client.deploy(make_project("flaky", FAILING_HANDLER))
    done = client.submit("hello", {"item_list": {"items": [1, 2, 3], "batch_size": 2}})
    flaky = client.submit(
        "flaky", {"item_list": {"items": [13, 1], "batch_size": 1}, "max_receive_count": 1}
    )
    wait_job(client, "hello", done["job_id"])
    wait_job(client, "flaky", flaky["job_id"])
    # Running until stopped: for DELETE /batch/{api}.
    sleeping = client.submit("flaky", {"item_list": {"items": ["sleep"], "batch_size": 1}})
    # Another, unfinished for the whole run: for POST /batch/{api}/pause and /resume.
    pausable = client.submit("flaky", {"item_list": {"items": ["sleep"], "batch_size": 1}})
    jobs = [done["job_id"], flaky["job_id"]]
    config = schemathesis.Config.from_dict(
        {
            "base-url": secured.url,
            # The token on every request; the 401 answers are tested elsewhere.
            "headers": {"Authorization": f"Bearer {TOKEN}"},
            "dictionaries": {
                "apis": {"values": ["hello", "flaky", "victim"]},
                "jobs": {"values": jobs},
            },
            # Fixed values reach every phase (dictionaries only the fuzzing one): the job
            # routes answer 404 before they read the rest of a request for an unknown job.
            # An operation's own value wins only where the top level sets none. (Several
            # include-* keys in one entry match any of them: hence include-name.)
            "parameters": {
                "path.api": "flaky",
                "query.before": {"dictionary": "jobs", "probability": 0.7},
            },
            "operations": [
                {
                    "include-path-regex": "^/batch/[{]api[}]/(?!pause$|resume$)",
                    "parameters": {"query.jobID": flaky["job_id"]},
                },
                {
                    "include-path-regex": "^/batch/[{]api[}]/(pause|resume)$",
                    "parameters": {"query.jobID": pausable["job_id"]},
                },
                {
                    "include-name": "GET /batch/{api}",
                    "parameters": {"query.jobID": {"dictionary": "jobs", "probability": 0.5}},
                },
                {
                    "include-name": "DELETE /batch/{api}",
                    "parameters": {"query.jobID": sleeping["job_id"]},
                },
                {
                    "include-name": "GET /apis/{name}",
                    "parameters": {"path.name": {"dictionary": "apis", "probability": 0.8}},
                },
                # Deleting draws only this API, so the others stay for the other operations.
                {
                    "include-name": "DELETE /apis/{name}",
                    "parameters": {"path.name": "victim"},
                },
            ],
            "generation": {
                "max-examples": int(os.environ.get("BATCHD_SCHEMATHESIS_EXAMPLES", "50")),
                "mode": "all",
                "with-security-parameters": False,
            },
            "phases": {"stateful": {"enabled": False}},
            "checks": {
                "enabled": False,
                "not_a_server_error": {"enabled": True},
                "response_schema_conformance": {"enabled": True},
                "status_code_conformance": {"enabled": True},
            },
        }
    )
    # from_url would leave out the operation that served the document itself.
    status, _, raw = fetch(secured, openapi.PATH, token=None)
    assert status == 200
    return schemathesis.openapi.from_dict(json.loads(raw), config=config)


def _generator_gave_up(event: Any) -> bool:
    return type(event.value).__name__ == "FailedHealthCheck"


def test_schemathesis_finds_no_server_errors_or_undocumented_answers(live_schema: Any) -> None:
    """Every phase but stateful (examples, coverage, fuzzing), through schemathesis's engine."""
    from schemathesis.engine import Status, events, from_schema

    problems: list[str] = []
    answered: dict[str, set[int]] = {}
    for event in from_schema(live_schema).execute():
        if isinstance(event, events.ScenarioFinished):
            statuses = answered.setdefault(event.recorder.label, set())
            for interaction in event.recorder.interactions.values():
                if interaction.response is not None:
                    statuses.add(interaction.response.status_code)
            for checks in event.recorder.checks.values():
                for node in checks:
                    if node.status == Status.FAILURE and node.failure_info is not None:
                        info = node.failure_info
                        problems.append(
                            f"{event.recorder.label}: {node.name}: {info.failure.title}\n"
                            f"{info.failure.message}\n{info.code_sample}"
                        )
        elif isinstance(event, events.NonFatalError) and _generator_gave_up(event):
            # Hypothesis could not draw enough examples for one operation's fuzzing (the
            # archive body and its query patterns): about the generator, not an answer.
            continue
        elif isinstance(event, events.NonFatalError | events.FatalError):
            problems.append(f"schemathesis error: {event}")
    assert not problems, "\n\n".join(problems)
    # Every operation ran, and the real names and ids got past the 404s to a success
    # (no random upload is a project: deploys are tested elsewhere).
    described = {
        f"{m.upper()} {p}" for p, item in openapi.document()["paths"].items() for m in item
    }
    assert set(answered) == described
    unsuccessful = {label for label, codes in answered.items() if not codes & {200, 201}}
    assert unsuccessful == {"POST /apis"}, answered
