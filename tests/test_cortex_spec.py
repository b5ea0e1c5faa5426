"""cortex.yaml as batchd deploys it: the translation of every Cortex v0.35 BatchAPI key
(translated, warned of or refused), Kubernetes quantities, and deploys of Cortex projects
through a real daemon."""

from __future__ import annotations

import json
import sys
import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from batchd.apis.archive import unpack_project
from batchd.apis.cortex_spec import (
    IGNORED_KEYS,
    REFUSED_KEYS,
    memory_bytes,
    parse_quantity,
    translate_cortex_config,
)
from batchd.apis.rebuild import rebuilt_archive
from batchd.apis.registry import CONFIG_KEY, DIGEST_KEY, snapshot_digest
from batchd.apis.spec import ProjectApi, pack_project, parse_byte_count
from batchd.client import BatchdError
from batchd.errors import DomainError
from batchd.http.errors import status_of
from tests.conftest import Daemon, wait_job
from tests.test_cli import batchd

FILES = frozenset({"handler.py", "src/util.py", "requirements.txt"})

BASE = """\
- name: summing-api
  kind: BatchAPI
  handler:
    type: python
    path: handler.py
"""


def translate(text: str, files: frozenset[str] = FILES) -> list[ProjectApi]:
    return translate_cortex_config(textwrap.dedent(text), "cortex.yaml", files)


def one(text: str, files: frozenset[str] = FILES) -> ProjectApi:
    (api,) = translate(text, files)
    return api


def refused(text: str, files: frozenset[str] = FILES) -> DomainError:
    with pytest.raises(DomainError) as caught:
        translate(text, files)
    assert status_of(caught.value) == 422
    return caught.value


def with_keys(section: str, lines: str) -> str:
    """BASE with `lines` (YAML, indented for `section`) added to section (handler, compute,
    networking, or "" for the API's own keys)."""
    if section == "handler":
        return BASE + textwrap.indent(lines, "    ")
    if section == "":
        return BASE + textwrap.indent(lines, "  ")
    return BASE + f"  {section}:\n" + textwrap.indent(lines, "    ")


# --- translated keys ------------------------------------------------------------------------


def test_every_translated_key_reaches_the_spec() -> None:
    api = one(
        BASE
        + """\
    python_path: ./src/
    config:
      scale: 2
      nested: {a: [1, null]}
    env:
      MODE: strict
    dependencies:
      pip: requirements.txt
  compute:
    gpu: 1
    mem: 200Mi
"""
    )
    assert api.warnings == ()
    assert api.spec.model_dump() == {
        "name": "summing-api",
        "handler": {
            "type": "python",
            "path": "handler.py",
            "batch_timeout": None,
            "config": {"scale": 2, "nested": {"a": [1, None]}},
            "env": {"MODE": "strict"},
            "python": None,
            "python_path": "src",
            "models": None,
            "requirements": "requirements.txt",
            "cortex_modules": True,
        },
        "compute": {"gpu": 1, "mem": str(200 * 1024**2), "disk": None},
        "retention": {"days": None},
    }
    assert api.spec.compute.mem_bytes == 200 * 1024**2


def test_a_minimal_api_gets_defaults_and_the_cortex_modules() -> None:
    spec = one(BASE).spec
    assert (spec.handler.cortex_modules, spec.handler.requirements) == (True, None)
    assert (spec.compute.gpu, spec.compute.mem, spec.handler.config) == (0, None, {})


def test_one_api_as_a_mapping_and_nulls_as_absent() -> None:
    api = one(
        """\
        name: single
        kind: BatchAPI
        handler: {type: python, path: handler.py, config: null, env: null, log_level: null}
        compute: {cpu: null, mem: null}
        networking: null
        """
    )
    assert (api.spec.name, api.spec.handler.config, api.warnings) == ("single", {}, ())


def test_several_apis_in_order() -> None:
    text = BASE + BASE.replace("summing-api", "second").replace("handler.py", "src/util.py")
    assert [(a.spec.name, a.spec.handler.path) for a in translate(text)] == [
        ("summing-api", "handler.py"),
        ("second", "src/util.py"),
    ]


def test_models_translate_for_the_model_types() -> None:
    models = "models:\n  paths:\n    - {name: a, path: models/a, signature_key: serve}\n"
    spec = one(with_keys("handler", models).replace("type: python", "type: tensorflow")).spec
    assert spec.handler.type == "tensorflow"
    assert spec.handler.models is not None and spec.handler.models.paths is not None
    (model,) = spec.handler.models.paths
    assert (model.name, model.path, model.signature_key) == ("a", "models/a", "serve")


def test_s3_model_paths_are_refused_naming_the_path() -> None:
    error = refused(
        with_keys("handler", "models:\n  paths:\n    - {name: a, path: s3://b/a}\n").replace(
            "type: python", "type: tensorflow"
        )
    )
    assert error.field == "handler.models.paths.0.path"
    assert "s3://b/a" in error.message


def test_models_with_a_python_handler_are_refused_as_cortex_did() -> None:
    error = refused(with_keys("handler", "models: {path: models/m}\n"))
    assert error.field == "handler"
    assert "models is for the tensorflow and onnx handler types" in error.message


# --- keys warned of -------------------------------------------------------------------------

IGNORED_VALUES: dict[str, str] = {
    "compute.cpu": "100m",
    "compute.inf": "0",
    "compute.node_groups": "[gpu-group]",
    "networking.endpoint": "/sum",
    "handler.image": "quay.io/cortexlabs/python-handler-cpu:0.35.0",
    "handler.tensorflow_serving_image": "quay.io/x:1",
    "handler.log_level": "debug",
    "handler.shm_size": "64Mi",
    "handler.processes_per_replica": "1",
    "handler.threads_per_process": "1",
    "handler.dependencies.conda": "conda-packages.txt",
    "handler.dependencies.shell": "dependencies.sh",
}


def test_the_table_covers_every_ignored_key() -> None:
    assert set(IGNORED_VALUES) == set(IGNORED_KEYS)


@pytest.mark.parametrize("key", sorted(IGNORED_VALUES))
def test_a_key_without_meaning_here_is_accepted_with_a_warning(key: str) -> None:
    parts = key.split(".")
    leaf = f"{parts[-1]}: {IGNORED_VALUES[key]}\n"
    if key.startswith("handler.dependencies."):
        text = with_keys("handler", "dependencies:\n  " + leaf)
    else:
        text = with_keys(parts[0], leaf)
    api = one(text)
    assert api.warnings == (f"{key} is ignored: {IGNORED_KEYS[key]}",)
    assert api.spec == one(BASE).spec


def test_warnings_come_in_file_order() -> None:
    api = one(with_keys("handler", "log_level: info\nimage: x\n") + "  compute: {cpu: 1}\n")
    assert [w.split(" ")[0] for w in api.warnings] == [
        "handler.log_level",
        "handler.image",
        "compute.cpu",
    ]


@pytest.mark.parametrize("key", ["processes_per_replica", "threads_per_process"])
def test_more_than_one_process_or_thread_is_refused_as_cortex_did(key: str) -> None:
    error = refused(with_keys("handler", f"{key}: 2\n"))
    assert error.field == f"handler.{key}"
    assert "must be 1 for a BatchAPI" in error.message
    assert refused(with_keys("handler", f"{key}: 0\n")).field == f"handler.{key}"


@pytest.mark.parametrize(
    ("present", "warning"),
    [
        (
            "dependencies.sh",
            "dependencies.sh is not used: " + IGNORED_KEYS["handler.dependencies.shell"],
        ),
        (
            "conda-packages.txt",
            "conda-packages.txt is not used: " + IGNORED_KEYS["handler.dependencies.conda"],
        ),
    ],
)
def test_a_present_dependency_file_cortex_would_have_used_is_warned_of(
    present: str, warning: str
) -> None:
    assert one(BASE, FILES | {present}).warnings == (warning,)


def test_a_pip_file_that_is_not_in_the_project_installs_nothing_with_a_warning() -> None:
    api = one(with_keys("handler", "dependencies: {pip: extra.txt}\n"))
    assert api.spec.handler.requirements is None
    assert api.warnings == (
        "handler.dependencies.pip: 'extra.txt' is not in the project, so nothing is "
        "installed (as in Cortex)",
    )


# --- keys refused ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "field", "line"),
    [
        (with_keys("handler", "pathh: handler.py\n"), "handler.pathh", 6),
        (with_keys("", "replicas: 2\n"), "replicas", 6),
        (with_keys("", "autoscaling: {min_replicas: 1}\n"), "autoscaling", 6),
        (with_keys("compute", "disk: 1Gi\n"), "compute.disk", 7),
        (with_keys("networking", "api_gateway: public\n"), "networking.api_gateway", 7),
        (
            with_keys("handler", "dependencies: {pip: r.txt, apt: x}\n"),
            "handler.dependencies.apt",
            6,
        ),
        (with_keys("handler", "models: {path: m, cache: 2}\n"), "handler.models.cache", 6),
        (
            with_keys("handler", "models:\n  paths:\n    - {name: a, path: m, sig: x}\n"),
            "handler.models.paths.0.sig",
            8,
        ),
        # batchd.toml's own keys are not cortex.yaml's.
        (with_keys("handler", "python: /usr/bin/python3\n"), "handler.python", 6),
        (with_keys("", "retention: {days: 1}\n"), "retention", 6),
    ],
)
def test_an_unknown_key_is_refused_by_name_and_line(text: str, field: str, line: int) -> None:
    error = refused(text)
    assert error.field == field
    assert error.message.startswith(f"cortex.yaml line {line}: ")
    assert field in error.message


@pytest.mark.parametrize("key", sorted(REFUSED_KEYS))
def test_a_key_cortex_refused_for_a_batch_api_is_refused(key: str) -> None:
    *sections, leaf = key.split(".")
    text = with_keys(
        "handler", f"{leaf}: 2\n" if len(sections) == 1 else f"models: {{path: m, {leaf}: 2}}\n"
    )
    error = refused(text)
    assert error.field == key
    assert error.message.endswith(
        f"{key} is not supported for a BatchAPI: {REFUSED_KEYS[key]} "
        "(Cortex refused it for a BatchAPI too)"
    )


@pytest.mark.parametrize("kind", ["RealtimeAPI", "AsyncAPI", "TaskAPI", "TrafficSplitter"])
def test_other_cortex_kinds_are_refused(kind: str) -> None:
    error = refused(BASE.replace("BatchAPI", kind))
    assert (error.field, error.message) == (
        "kind",
        f"cortex.yaml line 2: kind {kind!r}: batchd runs Batch APIs only (kind: BatchAPI)",
    )


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        (
            BASE.replace("  kind: BatchAPI\n", ""),
            "kind",
            "the API is missing the required key 'kind'",
        ),
        (
            BASE.replace("- name: summing-api\n  kind", "- kind"),
            "name",
            "the API is missing the required key 'name'",
        ),
        (
            "- {name: a, kind: BatchAPI}\n",
            "handler",
            "the API is missing the required key 'handler'",
        ),
        (
            BASE.replace("    type: python\n", ""),
            "handler.type",
            "the API is missing the required key 'handler.type'",
        ),
        (BASE.replace("kind: BatchAPI", "kind: BatchApi"), "kind", "unknown kind 'BatchApi'"),
        (BASE.replace("summing-api", "Summing_API"), "name", "(batchd's rule for API names)"),
        (
            BASE.replace("type: python", "type: pytorch"),
            "handler.type",
            "handler.type: Input should be",
        ),
        (
            BASE.replace("handler.py", "handler.pickle"),
            "handler.path",
            "must be a relative path to a .py file",
        ),
        (with_keys("compute", "gpu: -1\n"), "compute.gpu", "greater than or equal to 0"),
        (with_keys("compute", "gpu: true\n"), "compute.gpu", "valid integer"),
        (with_keys("compute", "gpu: '1'\n"), "compute.gpu", "valid integer"),
        (with_keys("compute", "mem: 1K\n"), "compute.mem", "(kilo is k; Ki is 1024)"),
        (with_keys("compute", "mem: 10Mi\n"), "compute.mem", "below the 16M a Python worker needs"),
        (with_keys("compute", "mem: 1.5\n"), "compute.mem", "must be a quantity"),
        (with_keys("handler", "env: {COUNT: 1}\n"), "handler.env.COUNT", "valid string"),
        (with_keys("handler", "config: [1]\n"), "handler.config", "valid dictionary"),
        (
            with_keys("handler", "python_path: lib\n"),
            "handler.python_path",
            "is not a folder of the project",
        ),
        (with_keys("handler", "python_path: ../up\n"), "handler.python_path", "inside the project"),
        (with_keys("", "compute: 4\n"), "compute", "compute must be a mapping"),
        (BASE + BASE, "name", "name 'summing-api' appears twice"),
    ],
)
def test_values_are_checked_and_the_error_names_the_key(
    text: str, field: str, message: str
) -> None:
    error = refused(text)
    assert error.field == field
    assert message in error.message
    assert error.message.startswith("cortex.yaml line ")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "cortex.yaml line 1: expected a list of APIs (or one API as a mapping)"),
        ("[]\n", "cortex.yaml line 1: expected a list of APIs (or one API as a mapping)"),
        (
            "\n\njust text\n",
            "cortex.yaml line 3: expected a list of APIs (or one API as a mapping)",
        ),
        (
            "- 1\n",
            "cortex.yaml line 1: each API must be a mapping of keys (name, kind, handler, ...)",
        ),
        (
            "- name: a\n  kind: [\n",
            "cortex.yaml line 3: not valid YAML: "
            "expected the node content, but found '<stream end>'",
        ),
        (
            "- a: 1\n b: 2\n",
            "cortex.yaml line 2: not valid YAML: "
            "expected <block end>, but found '<block mapping start>'",
        ),
        ("- {}\n---\n- {}\n", "cortex.yaml line 2: not valid YAML: but found another document"),
        (
            "[" * 2000 + "]" * 2000,
            "cortex.yaml line 1: the document is over 100000 values (aliases expanded) or 64 "
            "levels deep",
        ),
        (
            "- " + "[" * 70 + "]" * 70 + "\n",
            "cortex.yaml line 1: the document is over 100000 values (aliases expanded) or 64 "
            "levels deep",
        ),
        (
            "".join(
                f"- &a{i} [{', '.join([f'*a{i - 1}' if i else '1'] * 10)}]\n" for i in range(9)
            ),
            "cortex.yaml line 1: the document is over 100000 values (aliases expanded) or 64 "
            "levels deep",
        ),
    ],
)
def test_a_file_that_is_not_a_list_of_apis_is_refused_with_its_line(
    text: str, message: str
) -> None:
    error = refused(text)
    assert (error.field, error.message) == ("cortex.yaml", message)


def test_a_huge_document_is_refused_where_it_passes_the_bound() -> None:
    # At the 100,001st value as it is read (the 99,995th item, line 99,997): the rest of a
    # 1 MiB list is never composed into nodes, which would cost seconds and hundreds of MB.
    error = refused("- name: a\n  items:\n" + "  - 0\n" * 110_000)
    assert error.message.startswith("cortex.yaml line 99997: the document is over 100000")


# --- quantities -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("200Mi", Decimal(200 * 1024**2)),
        ("1Gi", Decimal(1024**3)),
        ("1.5Gi", Decimal(1536 * 1024**2)),
        ("1Ki", Decimal(1024)),
        ("2Ti", Decimal(2 * 1024**4)),
        ("1Pi", Decimal(1024**5)),
        ("1Ei", Decimal(1024**6)),
        ("1.5G", Decimal(1_500_000_000)),
        ("1k", Decimal(1000)),
        ("1M", Decimal(10**6)),
        ("3T", Decimal(3 * 10**12)),
        ("1P", Decimal(10**15)),
        ("1E", Decimal(10**18)),
        ("1e9", Decimal(10**9)),
        ("1E3", Decimal(1000)),
        ("2.5e+2", Decimal(250)),
        ("1e-3", Decimal("0.001")),
        ("1500m", Decimal("1.5")),
        ("5u", Decimal("0.000005")),
        ("7n", Decimal("0.000000007")),
        ("123", Decimal(123)),
        ("+1k", Decimal(1000)),
        ("-1k", Decimal(-1000)),
        ("1.", Decimal(1)),
        (".5Ki", Decimal(512)),
        ("0", Decimal(0)),
    ],
)
def test_kubernetes_quantities_parse_exactly(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1K",
        "1Kb",
        "1KB",
        "1MB",
        "1mi",
        "1 Gi",
        " 1Gi",
        "1Gi ",
        "Gi",
        "1e",
        "1.2.3",
        "0x10",
        "1GiB",
        "1i",
        "e3",
    ],
)
def test_what_kubernetes_refuses_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a Kubernetes quantity"):
        parse_quantity(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("200Mi", 200 * 1024**2),
        ("1.5G", 1_500_000_000),
        ("1e9", 1_000_000_000),
        ("20000000001m", 20_000_001),  # 20000000.001 bytes, rounded up as Kubernetes does
        ("16Mi", 16 * 1024**2),
        ("7Ei", 7 * 1024**6),
        ("9223372036854775807", 2**63 - 1),
    ],
)
def test_memory_is_whole_bytes_rounded_up(text: str, size: int) -> None:
    assert memory_bytes(text) == size


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("16M", "below the 16M"),  # 16 * 1000**2: under 16Mi
        ("0", "below the 16M"),
        ("-1Gi", "below the 16M"),
        ("8Ei", "over the largest memory bound"),
        ("1e99999999999999999999", "over the largest memory bound"),
        ("1e-99999999999999999999", "below the 16M"),
    ],
)
def test_memory_out_of_bounds_is_refused(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        memory_bytes(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512M", 512 * 1024**2),
        ("512Mi", 512 * 1024**2),
        ("512MiB", 512 * 1024**2),
        ("512MB", 512 * 1024**2),
        ("8G", 8 * 1024**3),
        ("8Gi", 8 * 1024**3),
        ("8g", 8 * 1024**3),
        ("1.5GiB", int(1.5 * 1024**3)),
        ("1.5Gi", int(1.5 * 1024**3)),
        ("4K", 4096),
        ("4Ki", 4096),
        ("1Ti", 1024**4),
        ("1T", 1024**4),
        ("100", 100),
        ("100B", 100),
        (" 2 Mi ", 2 * 1024**2),
    ],
)
def test_batchd_toml_sizes_keep_powers_of_1024_and_take_the_i_suffixes(
    text: str, size: int
) -> None:
    assert parse_byte_count(text) == size


@pytest.mark.parametrize("text", ["1Pi", "1e9", "1i", "1iB", "M", "1.5.1G", "-1M"])
def test_batchd_toml_refuses_what_it_does_not_read(text: str) -> None:
    with pytest.raises(ValueError):
        parse_byte_count(text)


# --- packing, unpacking, rebuilding ---------------------------------------------------------

SUM_HANDLER = """\
class Handler:
    def __init__(self, config, job_spec):
        self.offset = config.get("offset", 0)

    def handle_batch(self, payload, batch_id):
        return sum(payload) + self.offset
"""

TWO_APIS = """\
- name: summing-api
  kind: BatchAPI
  handler:
    type: python
    path: handler.py
    config: {offset: 0}
  compute:
    cpu: 100m
    mem: 200Mi
- name: offset-api
  kind: BatchAPI
  handler:
    type: python
    path: handler.py
    config: {offset: 100}
    log_level: debug
"""


def cortex_project(root: Path, files: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for relpath, text in {
        "handler.py": SUM_HANDLER,
        "cortex.yaml": TWO_APIS,
        **(files or {}),
    }.items():
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        (root / relpath).write_text(text)
    return root


def test_the_config_file_is_left_out_of_the_snapshot_and_cortexignore_applies(
    tmp_path: Path,
) -> None:
    root = cortex_project(
        tmp_path / "p",
        {".cortexignore": "*.csv\n", "rows.csv": "1", "notes.txt": "n", "cortex.yml": "[]\n"},
    )
    deployed = unpack_project(pack_project(root, 1 << 20), tmp_path / "snap", 1 << 20)
    assert deployed.config_file == "cortex.yaml"
    # cortex.yml is no config while cortex.yaml is: a project file like any other.
    assert deployed.files == ["cortex.yml", "handler.py", "notes.txt"]
    assert [api.spec.name for api in deployed.apis] == ["summing-api", "offset-api"]
    assert deployed.apis[1].warnings == (
        f"handler.log_level is ignored: {IGNORED_KEYS['handler.log_level']}",
    )


def test_batchdignore_wins_over_cortexignore_on_both_sides(tmp_path: Path) -> None:
    from batchd.packing import project_files

    root = cortex_project(
        tmp_path / "p",
        {".cortexignore": "*.csv\n", ".batchdignore": "*.txt\n", "rows.csv": "1", "notes.txt": "n"},
    )
    assert [name for name, _ in project_files(root)] == ["cortex.yaml", "handler.py", "rows.csv"]
    deployed = unpack_project(pack_project(root, 1 << 20), tmp_path / "snap", 1 << 20)
    assert deployed.files == ["handler.py", "rows.csv"]


def test_a_cortex_deployed_version_rebuilds_to_its_digest(tmp_path: Path) -> None:
    root = cortex_project(
        tmp_path / "p",
        {
            "other.yaml": TWO_APIS.replace("offset: 100", "offset: 7, none: null")
            + "    python_path: lib\n    dependencies: {pip: reqs.txt}\n"
            + "  compute: {gpu: 0, mem: 1.5G}\n",
            "lib/helpers.py": "X = 1\n",
            "reqs.txt": "\n",
        },
    )
    for config, name in ((None, "summing-api"), ("other.yaml", "offset-api")):
        snapshot = tmp_path / f"snap-{name}"
        deployed = unpack_project(
            pack_project(root, 1 << 20, config), snapshot, 1 << 20, config, name
        )
        spec = deployed.spec.model_dump()
        digest = snapshot_digest(snapshot, spec, deployed.dotenv)
        stored = {**spec, "snapshot": "abc", DIGEST_KEY: digest}
        if config is not None:
            stored[CONFIG_KEY] = config
        stored = json.loads(json.dumps(stored))
        rebuilt = rebuilt_archive(snapshot, stored, deployed.dotenv)
        again = unpack_project(rebuilt, tmp_path / f"again-{name}", 1 << 20, config, name)
        assert (again.spec, again.files) == (deployed.spec, deployed.files)
        assert again.spec.handler.cortex_modules
    assert again.spec.compute.mem == "1500000000"
    assert (again.spec.handler.python_path, again.spec.handler.requirements) == ("lib", "reqs.txt")


# --- deploys through a daemon ---------------------------------------------------------------


def test_a_cortex_file_of_two_apis_deploys_both_and_their_jobs_run(
    daemon: Daemon, tmp_path: Path
) -> None:
    root = cortex_project(tmp_path / "sum", {"dependencies.sh": "apt-get install -y x\n"})
    answer = daemon.client.deploy(root)
    first, second = answer["apis"]
    assert [(a["name"], a["version"], a["unchanged"], a["files"]) for a in answer["apis"]] == [
        ("summing-api", 1, False, 2),
        ("offset-api", 1, False, 2),
    ]
    shell = f"dependencies.sh is not used: {IGNORED_KEYS['handler.dependencies.shell']}"
    assert first["warnings"] == [f"compute.cpu is ignored: {IGNORED_KEYS['compute.cpu']}", shell]
    assert second["warnings"] == [
        f"handler.log_level is ignored: {IGNORED_KEYS['handler.log_level']}",
        shell,
    ]
    assert first["compute"]["mem"] == str(200 * 1024**2)
    # Each API has a snapshot of its own.
    snapshots = sorted(
        p.parent.parent.name for p in (daemon.state_dir / "apis").glob("*/*/handler.py")
    )
    assert snapshots == ["offset-api", "summing-api"]

    job = daemon.client.submit(
        "offset-api", {"item_list": {"items": [1, 2, 3, 4], "batch_size": 2}}
    )
    assert wait_job(daemon.client, "offset-api", job["job_id"])["status"] == "succeeded"
    results = sorted(r["result"] for r in daemon.client.results("offset-api", job["job_id"]))
    assert results == [103, 107]

    # Again: nothing changed, for either.
    again = daemon.client.deploy(root)
    assert [(a["version"], a["unchanged"]) for a in again["apis"]] == [(1, True), (1, True)]
    # Changing one API's section makes a new version of that API alone.
    (root / "cortex.yaml").write_text(TWO_APIS.replace("offset: 100", "offset: 5"))
    changed = daemon.client.deploy(root)
    assert [(a["name"], a["version"]) for a in changed["apis"]] == [
        ("summing-api", 1),
        ("offset-api", 2),
    ]
    # No unpacked folder or per-API copy is left behind, unchanged APIs or not.
    assert list((daemon.state_dir / "apis" / ".incoming").iterdir()) == []


def test_name_deploys_one_api_of_the_file(daemon: Daemon, tmp_path: Path) -> None:
    root = cortex_project(tmp_path / "sum")
    answer = daemon.client.deploy(root, name="offset-api")
    assert (answer["name"], answer["version"], answer["unchanged"]) == ("offset-api", 1, False)
    assert answer["warnings"] == [
        f"handler.log_level is ignored: {IGNORED_KEYS['handler.log_level']}"
    ]
    assert [api["name"] for api in daemon.client.list_apis()] == ["offset-api"]
    with pytest.raises(BatchdError) as caught:
        daemon.client.deploy(root, name="missing-api")
    assert (caught.value.status, caught.value.field) == (422, "name")
    assert caught.value.message == (
        "cortex.yaml defines no API 'missing-api' (only 'summing-api', 'offset-api')"
    )


def test_config_names_another_file_and_workers_start_from_its_archive(
    daemon: Daemon, tmp_path: Path
) -> None:
    root = cortex_project(
        tmp_path / "sum",
        {
            "dev.yaml": "name: dev-api\nkind: BatchAPI\n"
            "handler: {type: python, path: handler.py, config: {offset: 1000}}\n"
        },
    )
    answer = daemon.client.deploy(root, config=root / "dev.yaml")
    assert (answer["name"], answer["warnings"], answer["files"]) == ("dev-api", [], 2)
    assert daemon.client.deploy(root, config="dev.yaml")["unchanged"] is True
    # cortex.yaml is a plain project file when another file is the config.
    api_dir = daemon.state_dir / "apis" / "dev-api"
    assert sorted(p.name for p in next(api_dir.iterdir()).iterdir()) == [
        "cortex.yaml",
        "handler.py",
    ]
    job = daemon.client.submit("dev-api", {"item_list": {"items": [1, 2], "batch_size": 2}})
    assert wait_job(daemon.client, "dev-api", job["job_id"])["status"] == "succeeded"
    assert [r["result"] for r in daemon.client.results("dev-api", job["job_id"])] == [1003]
    for config in ("nope.yaml", "../sum/dev.yaml", ".env"):
        with pytest.raises(BatchdError) as caught:
            daemon.client.deploy(root, config=config)
        assert (caught.value.status, caught.value.field) == (422, "config")


def test_cortexignore_applies_on_the_server_too(daemon: Daemon, tmp_path: Path) -> None:
    root = cortex_project(
        tmp_path / "sum", {".cortexignore": "data/\n", "data/big.bin": "x" * 100, "keep.txt": "k"}
    )
    answer = daemon.client.deploy(root, name="summing-api")
    assert answer["files"] == 2
    (snapshot,) = (daemon.state_dir / "apis" / "summing-api").iterdir()
    assert sorted(p.name for p in snapshot.iterdir()) == ["handler.py", "keep.txt"]


@pytest.mark.parametrize(
    ("yaml_text", "field", "message"),
    [
        (
            TWO_APIS.replace(
                "    path: handler.py\n    config: {offset: 100}", "    pathh: handler.py"
            ),
            "handler.pathh",
            "cortex.yaml line 14: unknown key 'handler.pathh' for a Cortex BatchAPI",
        ),
        (
            BASE.replace("type: python", "type: tensorflow") + "    models: {path: s3://b/m}\n",
            "handler.models.path",
            "cortex.yaml line 6: handler.models.path: 's3://b/m': only local model paths are "
            "supported (s3:// is not yet): download the model onto this machine and give its "
            "absolute path",
        ),
    ],
)
def test_a_refused_cortex_file_deploys_nothing(
    daemon: Daemon, tmp_path: Path, yaml_text: str, field: str, message: str
) -> None:
    root = cortex_project(tmp_path / "bad", {"cortex.yaml": yaml_text})
    with pytest.raises(BatchdError) as caught:
        daemon.client.deploy(root)
    assert (caught.value.status, caught.value.field, caught.value.message) == (422, field, message)
    assert daemon.client.list_apis() == []


def test_the_cli_prints_each_api_and_its_warnings(daemon: Daemon, tmp_path: Path) -> None:
    root = cortex_project(tmp_path / "sum")
    done = batchd(daemon.url, "deploy", str(root))
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        "deployed summing-api version 1 (1 files)\ndeployed offset-api version 1 (1 files)\n"
    )
    assert done.stderr == (
        f"warning: summing-api: compute.cpu is ignored: {IGNORED_KEYS['compute.cpu']}\n"
        f"warning: offset-api: handler.log_level is ignored: "
        f"{IGNORED_KEYS['handler.log_level']}\n"
    )
    named = batchd(
        daemon.url, "deploy", str(root), "--config", "cortex.yaml", "--name", "offset-api"
    )
    assert named.stdout == (
        "deployed offset-api version 1 (1 files) (unchanged: same as the latest version)\n"
    )


def test_serve_deploys_a_cortex_project(make_daemon: Any, tmp_path: Path) -> None:
    root = cortex_project(tmp_path / "sum")
    daemon = make_daemon(start=False)
    daemon.extra_args = ["--deploy", str(root)]
    daemon.start()
    assert sorted(api["name"] for api in daemon.client.list_apis()) == ["offset-api", "summing-api"]
    assert "compute.cpu is ignored" in daemon.log_path.read_text()


def test_the_client_and_cli_never_import_yaml(tmp_path: Path) -> None:
    root = cortex_project(tmp_path / "sum")
    code = (
        "import sys, batchd.client, batchd.packing, batchd.cli.main\n"
        f"batchd.packing.pack_project(__import__('pathlib').Path({str(root)!r}))\n"
        "assert 'yaml' not in sys.modules and 'pydantic' not in sys.modules, sorted(sys.modules)\n"
    )
    import subprocess

    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
