"""Building an OpenAPI 3.1 document from a table of operations (:mod:`batchd.http.openapi`).

Bodies come from pydantic models: requests with ``mode="validation"``, responses with
``mode="serialization"``. Each model's ``$defs`` move into ``components/schemas``. The table
says what pydantic cannot know: paths, query parameters and status codes; every error status
an operation lists answers with the one error model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

OPENAPI_VERSION = "3.1.0"
REF = "#/components/schemas/{model}"


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # "path" or "query"
    schema: dict[str, Any]
    description: str
    required: bool = False

    def document(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "in": self.where,
            "required": self.required or self.where == "path",
            "description": self.description,
            "schema": self.schema,
        }


@dataclass(frozen=True)
class Body:
    """A body: one of `models` (anyOf when several), or a raw schema for a non-JSON body."""

    models: tuple[type[BaseModel], ...] = ()
    media_types: tuple[str, ...] = ("application/json",)
    raw_schema: dict[str, Any] | None = None


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    operation_id: str
    tag: str
    summary: str
    ok: dict[int, tuple[str, Body]]
    errors: tuple[int, ...] = ()
    params: tuple[Param, ...] = ()
    request: Body | None = None
    request_required: bool = True
    public: bool = False
    description: str = ""


def build_document(
    operations: Sequence[Operation],
    *,
    info: dict[str, Any],
    tags: list[dict[str, str]],
    security_schemes: dict[str, Any],
    error_model: type[BaseModel],
    error_text: Mapping[int, str],
    always: Sequence[int],
) -> dict[str, Any]:
    """The document; `always` are the error statuses any operation may answer."""
    components = _Components()
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method] = _operation(
            op, components, error_model, error_text, always
        )
    return {
        "openapi": OPENAPI_VERSION,
        "info": info,
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.schemas.items())),
            "securitySchemes": security_schemes,
        },
        "security": [{name: []} for name in security_schemes],
    }


class _Components:
    """Collects model schemas, moving each model's ``$defs`` into ``components/schemas``."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def ref(self, model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
        schema = model.model_json_schema(mode=mode, ref_template=REF)
        for name, definition in schema.pop("$defs", {}).items():
            self._add(name, definition)
        self._add(model.__name__, schema)
        return {"$ref": REF.format(model=model.__name__)}

    def _add(self, name: str, schema: dict[str, Any]) -> None:
        if self.schemas.setdefault(name, schema) != schema:
            raise ValueError(f"two different schemas are both named {name}")


def _content(body: Body, mode: JsonSchemaMode, components: _Components) -> dict[str, Any]:
    refs = [components.ref(model, mode) for model in body.models]
    schema = body.raw_schema or (refs[0] if len(refs) == 1 else {"anyOf": refs})
    return {media_type: {"schema": schema} for media_type in body.media_types}


def _operation(
    op: Operation,
    components: _Components,
    error_model: type[BaseModel],
    error_text: Mapping[int, str],
    always: Sequence[int],
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        str(status): {"description": text, "content": _content(body, "serialization", components)}
        for status, (text, body) in op.ok.items()
    }
    error = {"application/json": {"schema": components.ref(error_model, "serialization")}}
    codes = set(op.errors) | set(always)
    if not op.public:
        codes.add(401)
        if op.method != "get":
            codes.add(403)
    for status in sorted(codes):
        responses[str(status)] = {"description": error_text[status], "content": error}
    document: dict[str, Any] = {
        "operationId": op.operation_id,
        "tags": [op.tag],
        "summary": op.summary,
    }
    if op.description:
        document["description"] = op.description
    if op.params:
        document["parameters"] = [param.document() for param in op.params]
    if op.request is not None:
        document["requestBody"] = {
            "required": op.request_required,
            "content": _content(op.request, "validation", components),
        }
    document["responses"] = responses
    if op.public:
        document["security"] = []
    return document
