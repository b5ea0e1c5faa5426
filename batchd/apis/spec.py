"""A Handler project's spec: ``batchd.toml`` as :class:`ApiSpec`, validated in full.

The client packs with :func:`batchd.packing.basic_spec_check` (standard library only); the
server, and ``batchd serve --deploy``, check the whole spec here with pydantic, and
translate a Cortex ``cortex.yaml`` with :mod:`batchd.apis.cortex_spec`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from batchd import packing
from batchd.errors import Invalid
from batchd.packing import PROJECT_CONFIG, parse_dotenv

MAX_API_NAME_LENGTH = 42

_API_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


HandlerType = Literal["python", "tensorflow", "onnx"]
# The handler types that serve models (`[handler.models]`) rather than run Python alone.
MODEL_HANDLER_TYPES = ("tensorflow", "onnx")


def _model_path(path: str | None) -> str | None:
    """A model's path: inside the project (relative) or anywhere on the box (absolute)."""
    if path is None:
        return None
    if "://" in path:
        raise ValueError(
            f"{path!r}: only local model paths are supported (s3:// is not yet): "
            "download the model onto this machine and give its absolute path"
        )
    pure = PurePosixPath(path)
    if not pure.is_absolute() and ".." in pure.parts:
        raise ValueError(
            f"{path!r} leaves the project: give a path inside it, or an absolute path for a "
            "model elsewhere on this machine (it is then read in place, not uploaded)"
        )
    return path if pure.is_absolute() else pure.as_posix()


class ModelPathSpec(BaseModel):
    """One named model of `[handler.models] paths` (Cortex's `models.paths[*]`)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    path: str = Field(min_length=1)
    signature_key: str | None = None

    _local_path = field_validator("path")(_model_path)


class ModelsSpec(BaseModel):
    """The models a tensorflow or onnx handler serves: exactly one of `path` (one model,
    named "_cortex_default" as in Cortex), `paths` (named models) or `dir` (a folder whose
    subfolders are models). Paths are relative to the project, absolute, or s3:// URLs."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(default=None, min_length=1)
    paths: list[ModelPathSpec] | None = Field(default=None, min_length=1)
    dir: str | None = Field(default=None, min_length=1)
    signature_key: str | None = None
    # How many models one worker keeps loaded (least recently used are evicted); None: all.
    cache_size: int | None = Field(default=None, ge=1, strict=True)

    _local_paths = field_validator("path", "dir")(_model_path)

    @model_validator(mode="after")
    def _one_source(self) -> ModelsSpec:
        given = [key for key in ("path", "paths", "dir") if getattr(self, key) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of path, paths and dir")
        if self.paths is not None:
            names = [model.name for model in self.paths]
            if len(set(names)) != len(names):
                raise ValueError("model names in paths must be unique")
        return self


class HandlerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: HandlerType = "python"
    # Required for type "python"; a model type without one gets the built-in handler.
    path: str | None = None
    # Seconds one handle_batch call may run before its worker is killed; a job's own
    # batch_timeout wins, the daemon's is the default.
    batch_timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    config: dict[str, Any] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    python: str | None = None
    # A folder inside the project put on the handler's PYTHONPATH (Cortex's python_path).
    python_path: str | None = None
    models: ModelsSpec | None = None
    # The pip requirements installed into the API's own venv, relative to the project;
    # None: requirements.txt when the project has one.
    requirements: str | None = None
    # Put batchd's `cortex` and `cortex_internal` modules on the worker's path: set for
    # APIs deployed from a cortex.yaml, so they shadow nothing for anyone else.
    cortex_modules: bool = False

    @field_validator("path")
    @classmethod
    def _relative_py_file(cls, path: str | None) -> str | None:
        if path is None:
            return None
        pure = PurePosixPath(path)
        if pure.is_absolute() or ".." in pure.parts or pure.suffix != ".py":
            raise ValueError(f"must be a relative path to a .py file inside the project: {path!r}")
        # Normalised so it compares equal to archive member names ("./h.py" is "h.py").
        return pure.as_posix()

    @field_validator("python_path", "requirements")
    @classmethod
    def _inside_project(cls, path: str | None) -> str | None:
        if path is None:
            return None
        pure = PurePosixPath(path)
        if pure.is_absolute() or ".." in pure.parts:
            raise ValueError(f"must be a relative path inside the project: {path!r}")
        return pure.as_posix()

    @model_validator(mode="after")
    def _type_needs(self) -> HandlerSpec:
        if self.type == "python":
            if self.path is None:
                raise ValueError("a python handler needs path, its Handler's .py file")
            if self.models is not None:
                raise ValueError("models is for the tensorflow and onnx handler types")
        elif self.models is None:
            raise ValueError(f"a {self.type} handler needs [handler.models]")
        return self

    @field_validator("config")
    @classmethod
    def _json_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        # TOML and YAML have dates, times, inf and nan; the config travels as JSON, which
        # has none (YAML's null is JSON's).
        where = _not_json_at(config)
        if where is not None:
            raise ValueError(f"{where} is not a JSON value (a date, a time, inf or nan)")
        return config

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        for name in env:
            if not packing.ENV_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid environment variable name")
        return env

    @field_validator("python")
    @classmethod
    def _absolute_python(cls, python: str | None) -> str | None:
        if python is not None and not os.path.isabs(python):
            raise ValueError(f"must be an absolute path to an interpreter: {python!r}")
        return python


class ComputeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Strict: TOML is typed, so gpu = "1" or gpu = true is a mistake worth reporting.
    gpu: int = Field(default=0, ge=0, strict=True)
    # Memory per worker, e.g. "8G" or "512M"; None: unbounded.
    mem: str | None = None
    # Disk each worker's workspace may use, e.g. "20G"; None: the daemon's
    # max_workspace_size.
    disk: str | None = None

    @field_validator("mem", "disk")
    @classmethod
    def _check_size(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            # A memory bound has a floor; a disk size only has to be a size.
            (parse_size if info.field_name == "mem" else parse_byte_count)(value)
        return value

    @property
    def mem_bytes(self) -> int | None:
        return None if self.mem is None else parse_size(self.mem)

    @property
    def disk_bytes(self) -> int | None:
        return None if self.disk is None else parse_byte_count(self.disk)


# K, M, G, T and their Ki, Mi, Gi, Ti spellings are all powers of 1024 here (case does not
# matter, a B may follow): batchd.toml has always read "8G" so. cortex.yaml's Kubernetes
# quantities, where G is 1000**3, are read by batchd.apis.cortex_spec.
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([KMGT])I?B?|B)?\s*$", re.IGNORECASE)
_UNITS = {None: 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
MAX_MEMORY_BYTES = 2**63 - 1
_MIN_MEMORY_BYTES = 16 * 1024**2


def parse_byte_count(text: str) -> int:
    """ "8G", "512M", "1.5GiB", "200Mi", "1048576" -> bytes (powers of 1024), at least 1."""
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"not a size: {text!r} (use e.g. 512M, 200Mi or 8G)")
    unit = match.group(2)
    size = int(float(match.group(1)) * _UNITS[unit.upper() if unit else None])
    if size < 1:
        raise ValueError(f"{text!r} is not a positive size")
    if size > MAX_MEMORY_BYTES:
        raise ValueError(f"{text!r} is over the largest size, 8E")
    return size


def parse_size(text: str) -> int:
    """A memory bound: a size as parse_byte_count reads it, at least 16M."""
    size = parse_byte_count(text)
    problem = min_memory_problem(text, size)
    if problem is not None:
        raise ValueError(problem)
    return size


def min_memory_problem(text: str, size: int) -> str | None:
    """Why `size` bytes (written `text`) cannot bound a worker's memory; None if it can."""
    if size < _MIN_MEMORY_BYTES:
        return f"{text!r} is below the 16M a Python worker needs"
    return None


def _json_scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, str | int | bool)


def _not_json_at(value: Any) -> str | None:
    """Where, below `value` (a TOML table), a value JSON cannot carry is; None if nowhere."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            stack.extend((child, f"{path}.{key}" if path else key) for key, child in node.items())
        elif isinstance(node, list):
            stack.extend((child, f"{path}[{index}]") for index, child in enumerate(node))
        elif not _json_scalar(node):
            return path
    return None


class RetentionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Days this API's finished jobs are kept; None: the daemon's retention_days.
    days: float | None = Field(default=None, gt=0, allow_inf_nan=False)


class ApiSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    handler: HandlerSpec
    compute: ComputeSpec = Field(default_factory=ComputeSpec)
    retention: RetentionSpec = Field(default_factory=RetentionSpec)

    @field_validator("name")
    @classmethod
    def _dns_label(cls, name: str) -> str:
        problem = _api_name_problem(name)
        if problem is not None:
            raise ValueError(problem)
        return name


def _api_name_problem(name: str) -> str | None:
    if not 1 <= len(name) <= MAX_API_NAME_LENGTH:
        return f"api name must be 1 to {MAX_API_NAME_LENGTH} characters, got {len(name)}"
    if not _API_NAME.fullmatch(name):
        return (
            f"api name {name!r} must be lowercase letters, digits and '-', "
            "start with a letter and not end with '-'"
        )
    return None


@dataclass(frozen=True)
class ProjectApi:
    """One API that a project's config file defines, and what its translation warns of."""

    spec: ApiSpec
    warnings: tuple[str, ...] = ()


def validate_api_name(name: str) -> str:
    problem = _api_name_problem(name)
    if problem is not None:
        raise Invalid(problem, field="name")
    return name


def parse_api_spec(text: str) -> ApiSpec:
    data = packing.load_toml(text)
    try:
        return ApiSpec.model_validate(data)
    except ValidationError as exc:
        raise _spec_error(exc) from exc


def _spec_error(exc: ValidationError) -> Invalid:
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        message = f"unknown key {where!r} in {PROJECT_CONFIG}"
    elif first["type"] == "missing":
        message = f"{PROJECT_CONFIG} is missing the required key {where!r}"
    else:
        detail = first["msg"].removeprefix("Value error, ")
        message = f"{PROJECT_CONFIG}: {where}: {detail}"
    return Invalid(message, field=where or PROJECT_CONFIG)


def project_apis(
    config_name: str, config_text: str, project_files: Collection[str], name: str | None = None
) -> list[ProjectApi]:
    """The APIs a config file defines (batchd.toml's one, or a Cortex file's), or only the
    one called `name`."""
    if packing.is_cortex_config(config_name):
        from batchd.apis.cortex_spec import translate_cortex_config

        apis = translate_cortex_config(config_text, config_name, project_files)
    else:
        apis = [ProjectApi(parse_api_spec(config_text))]
    if name is None:
        return apis
    chosen = [api for api in apis if api.spec.name == name]
    if not chosen:
        defined = ", ".join(repr(api.spec.name) for api in apis)
        raise Invalid(f"{config_name} defines no API {name!r} (only {defined})", field="name")
    return chosen


def _full_spec_check(
    config_name: str, config_text: str, env_text: str | None, project_files: Collection[str]
) -> list[str]:
    apis = project_apis(config_name, config_text, project_files)
    if env_text is not None:
        parse_dotenv(env_text)
    return [api.spec.handler.path for api in apis if api.spec.handler.path is not None]


def pack_project(root: Path, max_bytes: int, config: str | None = None) -> bytes:
    """:func:`batchd.packing.pack_project` with the server's full spec validation first."""
    return packing.pack_project(root, max_bytes, check_spec=_full_spec_check, config=config)
