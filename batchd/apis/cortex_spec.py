"""A Cortex project's ``cortex.yaml``, translated into :class:`ApiSpec` (server side).

Cortex v0.35's BatchAPI keys (``pkg/types/userconfig/api.go``, ``pkg/types/spec/
validations.go``) are each translated, accepted with a warning (no meaning on one box), or
refused as Cortex refused them for a BatchAPI. Any other key is refused by name. Every API
translated here gets ``cortex_modules``, so its handler finds the ``cortex`` modules.
"""

from __future__ import annotations

import decimal
import re
from collections.abc import Collection
from decimal import Decimal
from pathlib import PurePosixPath
from typing import Any

import yaml
from pydantic import ValidationError

from batchd.apis.spec import MAX_MEMORY_BYTES, ApiSpec, ProjectApi, min_memory_problem
from batchd.errors import Invalid

CORTEX_KINDS = ("RealtimeAPI", "BatchAPI", "TaskAPI", "AsyncAPI", "TrafficSplitter")

# The keys of each section with a meaning here, by section path ("" is an API's own).
_SECTIONS: dict[str, frozenset[str]] = {
    "": frozenset({"name", "kind", "handler", "compute", "networking"}),
    "handler": frozenset(
        {"type", "path", "python_path", "config", "env", "models", "dependencies"}
    ),
    "handler.models": frozenset({"path", "paths", "dir", "signature_key", "cache_size"}),
    "handler.dependencies": frozenset({"pip"}),
    "compute": frozenset({"gpu", "mem"}),
    "networking": frozenset(),
}

# Keys a Cortex BatchAPI accepted that mean nothing on one machine: accepted, with a warning.
IGNORED_KEYS: dict[str, str] = {
    "compute.cpu": "workers share this machine's cores; max_workers and a job's workers "
    "bound how many run",
    "compute.inf": "batchd has no AWS Inferentia support",
    "compute.node_groups": "batchd runs on this machine (or the nodes sharing its database)",
    "networking.endpoint": "an API's endpoint is always /batch/<name>",
    "handler.image": "workers run in the daemon's Python (or [handler] python), not a "
    "container image",
    "handler.tensorflow_serving_image": "batchd runs no TensorFlow Serving container",
    "handler.log_level": "the daemon's log_level applies to every worker",
    "handler.shm_size": "workers share this machine's /dev/shm",
    "handler.processes_per_replica": "each worker is one process; a job's workers field "
    "sets how many run",
    "handler.threads_per_process": "each worker handles one batch at a time",
    "handler.dependencies.conda": "batchd installs pip requirements only",
    "handler.dependencies.shell": "batchd runs no setup script; install system packages "
    "on the machine",
}

# Keys Cortex itself refused for a BatchAPI.
REFUSED_KEYS: dict[str, str] = {
    "handler.protobuf_path": "gRPC is for a RealtimeAPI",
    "handler.server_side_batching": "server-side batching is for a RealtimeAPI",
    "handler.multi_model_reloading": "live model reloading is for a RealtimeAPI",
    "handler.models.disk_cache_size": "a model disk cache is for a RealtimeAPI",
}

# Cortex refused more than one process or thread per replica for a BatchAPI.
_AT_MOST_ONE = ("handler.processes_per_replica", "handler.threads_per_process")
# Files Cortex installed or ran when present, by default name, and the key that renames them.
_DEFAULT_DEPENDENCY_FILES = {
    "handler.dependencies.conda": "conda-packages.txt",
    "handler.dependencies.shell": "dependencies.sh",
}
# Where a batchd spec key came from in cortex.yaml, where the names differ.
_CORTEX_FIELD = {"handler.requirements": "handler.dependencies.pip"}
_NAME_RULE = " (batchd's rule for API names)"
# Bounds on a config document: a billion laughs of aliases, or nesting past the recursion
# limit, would otherwise cost the daemon its CPU or a 500.
_MAX_NODES = 100_000
_MAX_DEPTH = 64


def translate_cortex_config(
    text: str, file_name: str, project_files: Collection[str]
) -> list[ProjectApi]:
    """Every API of a Cortex config file, in order. `project_files` are the snapshot's files,
    for the dependency files Cortex used when present; Invalid names the file, line and key."""
    loader = _BoundedLoader(text, file_name)
    try:
        root = loader.get_single_node()
        if root is not None:
            _check_shape(root, file_name)
        document = None if root is None else loader.construct_document(root)
    except yaml.YAMLError as exc:
        raise Invalid(_yaml_problem(exc, file_name), file_name) from None
    finally:
        loader.dispose()
    if isinstance(document, dict):
        document, root = [document], yaml.SequenceNode("tag:yaml.org,2002:seq", [root])
    if not isinstance(document, list) or not document:
        line = 1 if root is None else root.start_mark.line + 1
        raise Invalid(
            f"{file_name} line {line}: expected a list of APIs (or one API as a mapping)",
            file_name,
        )
    assert root is not None
    apis = [
        _Api(file_name, item, node, project_files).translate()
        for item, node in zip(document, root.value, strict=True)
    ]
    names = [api.spec.name for api in apis]
    for index, name in enumerate(names):
        if name in names[:index]:
            line = _line(root.value[index], ["name"])
            raise Invalid(f"{file_name} line {line}: name {name!r} appears twice", "name")
    return apis


class _BoundedLoader(yaml.SafeLoader):
    """A SafeLoader that stops at the bounds while it composes: a 1 MiB flat list would
    otherwise cost seconds of CPU and hundreds of MB as nodes before any check, and deep
    nesting the composer's recursion."""

    def __init__(self, text: str, file_name: str) -> None:
        super().__init__(text)
        self._file_name = file_name
        self._nodes = 0
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._nodes += 1
        self._depth += 1
        try:
            if self._nodes > _MAX_NODES or self._depth > _MAX_DEPTH:
                event = self.peek_event()  # type: ignore[no-untyped-call]
                raise _too_big(self._file_name, event.start_mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _too_big(file_name: str, line: int) -> Invalid:
    return Invalid(
        f"{file_name} line {line}: the document is over {_MAX_NODES} values (aliases "
        f"expanded) or {_MAX_DEPTH} levels deep",
        file_name,
    )


def _check_shape(root: yaml.Node, file_name: str) -> None:
    """Refuse a document whose aliases expand past any config's size, or nested deeper than
    a config is: the spec is walked and dumped to JSON whole, aliases expanded."""
    seen = 0
    stack: list[tuple[yaml.Node, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        seen += 1
        if seen > _MAX_NODES or depth > _MAX_DEPTH:
            raise _too_big(file_name, node.start_mark.line + 1)
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.extend(((key, depth + 1), (value, depth + 1)))


def _yaml_problem(exc: yaml.YAMLError, file_name: str) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = file_name if mark is None else f"{file_name} line {mark.line + 1}"
    return f"{where}: not valid YAML: {problem}"


class _Api:
    """One API of the file: its mapping, its YAML node (for line numbers), its warnings."""

    def __init__(
        self, file_name: str, item: Any, node: yaml.Node, project_files: Collection[str]
    ) -> None:
        self.file_name = file_name
        self.item = item
        self.node = node
        self.project_files = project_files
        self.warnings: list[str] = []

    def fail(self, path: str, problem: str) -> Invalid:
        line = _line(self.node, [part for part in path.split(".") if part])
        return Invalid(f"{self.file_name} line {line}: {problem}", path or self.file_name)

    def translate(self) -> ProjectApi:
        if not isinstance(self.item, dict):
            raise self.fail("", "each API must be a mapping of keys (name, kind, handler, ...)")
        self._check_required("name", "kind")
        self._check_kind()
        self._check_required("handler", "handler.type")
        sections = {path: self._section(path) for path in _SECTIONS}
        for path, section in sections.items():
            self._check_keys(path, section)
        handler, compute = sections["handler"], sections["compute"]
        batchd_spec: dict[str, Any] = {
            "name": self.item.get("name"),
            "handler": self._handler(handler, sections["handler.dependencies"]),
            "compute": {},
        }
        if compute.get("gpu") is not None:
            batchd_spec["compute"]["gpu"] = compute["gpu"]
        if compute.get("mem") is not None:
            batchd_spec["compute"]["mem"] = str(self._memory(compute["mem"]))
        self._dependency_file_warnings(sections["handler.dependencies"])
        try:
            spec = ApiSpec.model_validate(batchd_spec)
        except ValidationError as exc:
            raise self._spec_error(exc) from exc
        return ProjectApi(spec=spec, warnings=tuple(self.warnings))

    def _check_required(self, *paths: str) -> None:
        # Required by Cortex; batchd's own rules then check the values.
        for path in paths:
            section, _, key = path.rpartition(".")
            if self._section(section).get(key) is None:
                raise self.fail(path, f"the API is missing the required key {path!r}")

    def _check_kind(self) -> None:
        kind = self.item.get("kind")
        if kind != "BatchAPI":
            known = kind in CORTEX_KINDS
            raise self.fail(
                "kind",
                f"kind {kind!r}: batchd runs Batch APIs only (kind: BatchAPI)"
                if known
                else f"unknown kind {kind!r}; batchd runs Batch APIs only (kind: BatchAPI)",
            )

    def _section(self, path: str) -> dict[str, Any]:
        value: Any = self.item
        for part in [part for part in path.split(".") if part]:
            value = value.get(part)
            if value is None:
                return {}
            if not isinstance(value, dict):
                raise self.fail(path, f"{path} must be a mapping of keys")
        return value  # type: ignore[no-any-return]

    def _check_keys(self, path: str, section: dict[str, Any]) -> None:
        for key, value in section.items():
            full = f"{path}.{key}" if path else str(key)
            if key in _SECTIONS[path]:
                continue
            if full in REFUSED_KEYS:
                raise self.fail(
                    full,
                    f"{full} is not supported for a BatchAPI: {REFUSED_KEYS[full]} "
                    "(Cortex refused it for a BatchAPI too)",
                )
            if full in IGNORED_KEYS:
                if value is not None:
                    self._ignored(full, value)
                continue
            raise self.fail(full, f"unknown key {full!r} for a Cortex BatchAPI")

    def _ignored(self, key: str, value: Any) -> None:
        if key in _AT_MOST_ONE:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise self.fail(key, f"{key} must be a whole number of at least 1")
            if value > 1:
                raise self.fail(
                    key,
                    f"{key} must be 1 for a BatchAPI, as Cortex required; a job's workers "
                    "field sets how many workers run",
                )
        self.warnings.append(f"{key} is ignored: {IGNORED_KEYS[key]}")

    def _handler(self, handler: dict[str, Any], dependencies: dict[str, Any]) -> dict[str, Any]:
        translated = {
            key: handler[key]
            for key in ("type", "path", "python_path", "config", "env", "models")
            if handler.get(key) is not None
        }
        if isinstance(translated.get("python_path"), str):
            self._check_python_path(translated["python_path"])
        pip = dependencies.get("pip")
        if pip is not None:
            if isinstance(pip, str) and PurePosixPath(pip).as_posix() not in self.project_files:
                self.warnings.append(
                    f"handler.dependencies.pip: {pip!r} is not in the project, so nothing "
                    "is installed (as in Cortex)"
                )
            else:
                translated["requirements"] = pip
        translated["cortex_modules"] = True
        return translated

    def _check_python_path(self, python_path: str) -> None:
        pure = PurePosixPath(python_path)
        if pure.is_absolute() or ".." in pure.parts:
            return  # refused by the spec, which says why
        folder = pure.as_posix()
        if folder != "." and not any(name.startswith(f"{folder}/") for name in self.project_files):
            raise self.fail(
                "handler.python_path",
                f"handler.python_path {python_path!r} is not a folder of the project",
            )

    def _memory(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise self.fail("compute.mem", "compute.mem must be a quantity such as 200Mi or 1G")
        try:
            size = memory_bytes(str(value))
        except ValueError as exc:
            raise self.fail("compute.mem", f"compute.mem: {exc}") from None
        return size

    def _dependency_file_warnings(self, dependencies: dict[str, Any]) -> None:
        for key, default in _DEFAULT_DEPENDENCY_FILES.items():
            if dependencies.get(key.rsplit(".", 1)[1]) is None and default in self.project_files:
                self.warnings.append(f"{default} is not used: {IGNORED_KEYS[key]}")

    def _spec_error(self, exc: ValidationError) -> Invalid:
        first = exc.errors(include_url=False)[0]
        parts = [str(part) for part in first["loc"]]
        field = _CORTEX_FIELD.get(".".join(parts[:2]), ".".join(parts))
        detail = first["msg"].removeprefix("Value error, ")
        if first["type"] == "missing":
            return self.fail(field, f"the API is missing the required key {field!r}")
        if first["type"] == "extra_forbidden":
            return self.fail(field, f"unknown key {field!r} for a Cortex BatchAPI")
        if field == "name":
            detail += _NAME_RULE
        return self.fail(field, f"{field}: {detail}")


def _line(node: yaml.Node, path: list[str]) -> int:
    """The line (from 1) of the deepest key on `path` that the YAML has."""
    line = node.start_mark.line + 1
    for part in path:
        if isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            line = node.start_mark.line + 1
            continue
        if not isinstance(node, yaml.MappingNode):
            break
        match = [(key, value) for key, value in node.value if key.value == part]
        if not match:
            break
        key_node, node = match[-1]
        line = key_node.start_mark.line + 1
    return line


# --- Kubernetes quantities ------------------------------------------------------------------

# k8s.io/apimachinery resource.Quantity: <sign><number><suffix>, where a number is digits,
# digits.digits, digits. or .digits. No spaces, and "K" is not a suffix (kilo is "k").
_QUANTITY = re.compile(
    r"(?P<number>[+-]?(?:\d+\.?\d*|\.\d+))"
    r"(?P<suffix>[KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?"
)
_BINARY = {f"{prefix}i": 1024**power for power, prefix in enumerate("KMGTPE", start=1)}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    **{prefix: Decimal(10) ** (3 * power) for power, prefix in enumerate("kMGTPE", start=1)},
}
_MAX_QUANTITY_CHARS = 100
_MAX_EXPONENT = 1000
# Wide enough that no quantity of at most 100 characters is rounded before the final step.
_EXACT = decimal.Context(prec=400, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)


def parse_quantity(text: str) -> Decimal:
    """A Kubernetes quantity, exactly: ``200Mi`` (powers of 1024: Ki..Ei), ``1.5G`` (powers
    of 1000: k, M, G, T, P, E; also m, u, n), ``1e9``, ``+512``. ValueError otherwise."""
    match = _QUANTITY.fullmatch(text) if len(text) <= _MAX_QUANTITY_CHARS else None
    if match is None:
        hint = " (kilo is k; Ki is 1024)" if re.fullmatch(r"[\d.]+K", text) else ""
        raise ValueError(
            f"{text!r} is not a Kubernetes quantity such as 200Mi, 1Gi, 1.5G or 1e9{hint}"
        )
    number = Decimal(match["number"])
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        return _EXACT.multiply(number, Decimal(_BINARY[suffix]))
    if suffix in _DECIMAL:
        return _EXACT.multiply(number, _DECIMAL[suffix])
    # Past 1000, no byte count tells exponents apart (the number has under 100 digits), and
    # Decimal's own exponent has a bound.
    exponent = max(-_MAX_EXPONENT, min(_MAX_EXPONENT, int(suffix[1:]))) if suffix else 0
    return number.scaleb(exponent, _EXACT)


def memory_bytes(text: str) -> int:
    """A memory quantity in whole bytes, rounded up as Kubernetes rounds (Quantity.Value),
    within batchd's memory bounds."""
    quantity = parse_quantity(text)
    if quantity > MAX_MEMORY_BYTES:
        raise ValueError(f"{text!r} is over the largest memory bound, 8Ei")
    size = int(quantity.to_integral_value(decimal.ROUND_CEILING, _EXACT))
    problem = min_memory_problem(text, size)
    if problem is not None:
        raise ValueError(problem)
    return size
