"""A deployed version's project archive, rebuilt from what a state dir keeps of it.

A SQLite daemon keeps no archive of what was uploaded: only the snapshot folder (the
project's files) and the version's row (its spec and .env). ``batchd migrate`` rebuilds
an archive from the two, for a database that keeps each version's archive so that any
node can unpack it; such a node checks what it unpacks against the version's digest, so
the rebuilt archive is checked the same way here first. A version deployed from a config
file named with ``--config`` gets that file again, under its name (a cortex.yaml made from
the spec, when it was one), since nodes unpack its archive with that name.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from batchd.apis.archive import unpack_project
from batchd.apis.registry import CONFIG_KEY, DIGEST_KEY, snapshot_digest
from batchd.apis.spec import ApiSpec, pack_project
from batchd.packing import CORTEX_CONFIGS, ENV_FILE, PROJECT_CONFIG, is_cortex_config


class NotRebuilt(Exception):
    """The archive cannot be rebuilt to the version's digest; the message says why."""


def rebuilt_archive(snapshot: Path, spec: dict[str, Any], dotenv: dict[str, str]) -> bytes:
    """The tar.gz a client would upload for this version: its batchd.toml and .env, made
    again from the stored spec and .env, and the snapshot's files."""
    with tempfile.TemporaryDirectory(prefix="batchd-rebuild-") as scratch:
        project = Path(scratch) / "project"
        # The snapshot is read-only: the copy is not, so that the project files go in.
        shutil.copytree(snapshot, project, symlinks=True)
        project.chmod(0o700)
        config = spec.get(CONFIG_KEY)
        # TOML has no null, which a handler config from a cortex.yaml may hold.
        if config is None and _holds_null(spec["handler"].get("config")):
            config = CORTEX_CONFIGS[0]
        config_text = (
            cortex_yaml(spec) if config and is_cortex_config(config) else project_toml(spec)
        )
        (project / (config or PROJECT_CONFIG)).write_text(config_text, encoding="utf-8")
        if dotenv:
            (project / ENV_FILE).write_text(dotenv_text(dotenv), encoding="utf-8")
        # Checked against the daemon's size limit when deployed: none applies again.
        archive = pack_project(project, sys.maxsize, config)
        unpacked = unpack_project(
            archive, Path(scratch) / "unpacked", sys.maxsize, config, spec["name"]
        )
        digest = snapshot_digest(
            Path(scratch) / "unpacked", unpacked.spec.model_dump(), unpacked.dotenv
        )
    if digest != spec.get(DIGEST_KEY):
        raise NotRebuilt("the rebuilt project does not match the digest it was deployed with")
    return archive


def project_toml(spec: dict[str, Any]) -> str:
    """batchd.toml for the spec's own keys (not those the daemon added): a key per line,
    tables inline. Unset (None) keys are left out: TOML has no null, and they default so."""
    return "".join(
        f"{_toml_value(key)} = {_toml_value(spec[key])}\n"
        for key in ApiSpec.model_fields
        if spec.get(key) is not None
    )


def cortex_yaml(spec: dict[str, Any]) -> str:
    """A cortex.yaml whose translation is `spec` (one translated from a cortex.yaml: it
    holds only what cortex.yaml can say)."""
    handler = spec["handler"]
    cortex_handler = {
        key: handler[key]
        for key in ("type", "path", "python_path", "config", "env")
        if handler.get(key) is not None
    }
    if handler.get("models") is not None:
        # Unset model keys are None in the spec, and absent in a cortex.yaml.
        cortex_handler["models"] = _without_none(handler["models"])
    if handler.get("requirements") is not None:
        cortex_handler["dependencies"] = {"pip": handler["requirements"]}
    api = {
        "name": spec["name"],
        "kind": "BatchAPI",
        "handler": cortex_handler,
        "compute": _without_none(spec.get("compute", {})),
    }
    return yaml.safe_dump([api], sort_keys=False)


def _holds_null(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_holds_null(item) for item in value.values())
    if isinstance(value, list):
        return any(_holds_null(item) for item in value)
    return value is None


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(item) for item in value]
    return value


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        pairs = (f"{_toml_value(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None)
        return "{ " + ", ".join(pairs) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml_value, value)) + "]"
    if isinstance(value, str):
        # JSON's escapes are TOML's; TOML also wants DEL escaped.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    # A bool, an int or a finite float: spelled the same in JSON and TOML.
    return json.dumps(value)


def dotenv_text(dotenv: dict[str, str]) -> str:
    """Lines that parse back to `dotenv`: each value in single quotes, taken as is."""
    lines = []
    for name, value in dotenv.items():
        if len(f"{value}.".splitlines()) > 1:
            raise NotRebuilt(f"the .env value of {name} holds a line break")
        lines.append(f"{name}='{value}'\n")
    return "".join(lines)
