"""The body of ``POST /batch/<api>``: the job's pydantic model, and parsing it.

Every mistake becomes a domain error (BadRequest for what is no JSON object, Invalid for
the rest) whose ``field`` points at the offending part of the body, because that is what
users see. The model is also what ``GET /openapi.json`` publishes for the request.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from batchd.admission.globs import compile_glob
from batchd.admission.json_text import (
    SURROGATE_ESCAPE,
    json_type,
    loads,
    lone_surrogate_at,
    nested_deeper_than,
)
from batchd.errors import BadRequest, Invalid

DEFAULT_MAX_RECEIVE_COUNT = 3
DEFAULT_MAX_JSON_DEPTH = 64

SourceKind = Literal["item_list", "delimited_files", "file_path_lister"]
SOURCE_KINDS: tuple[SourceKind, ...] = ("item_list", "delimited_files", "file_path_lister")

# Counts and priorities end up in SQLite INTEGER columns, which hold signed 64 bits.
_INT64_MAX = 2**63 - 1
_Count = Annotated[int, Field(ge=1, le=_INT64_MAX)]

# Error `ctx` key naming where, below the error's own location, the problem is.
_AT = "at"


def _check_glob(pattern: str) -> str:
    try:
        compile_glob(pattern)
    except ValueError as exc:
        raise PydanticCustomError("glob", "{reason}", {"reason": str(exc)}) from exc
    return pattern


_Glob = Annotated[str, AfterValidator(_check_glob)]


class _Strict(BaseModel):
    # strict: JSON `true` is no integer and `"2"` no number.
    model_config = ConfigDict(strict=True, extra="forbid")


class ItemList(_Strict):
    items: list[Any] = Field(min_length=1)
    batch_size: _Count


def _describe_s3_paths(schema: dict[str, Any]) -> None:
    """The published schema: ``s3_paths`` is accepted in place of ``paths``."""
    properties = schema["properties"]
    properties["s3_paths"] = {
        **properties["paths"],
        "title": "S3 Paths",
        "description": "Cortex's name for paths",
    }
    schema["required"] = [name for name in schema["required"] if name != "paths"]
    schema["oneOf"] = [{"required": ["paths"]}, {"required": ["s3_paths"]}]


class FileSource(_Strict):
    """``delimited_files`` and ``file_path_lister``; Cortex's ``s3_paths`` means ``paths``.
    Each path is a local file or folder, or an ``s3://bucket/key`` URL (a key prefix)."""

    model_config = ConfigDict(json_schema_extra=_describe_s3_paths)

    paths: list[str] = Field(min_length=1)
    includes: list[_Glob] = []
    excludes: list[_Glob] = []
    batch_size: _Count
    # The key the paths came under, for errors that name one of them.
    _paths_key: str = PrivateAttr("paths")

    @model_validator(mode="wrap")
    @classmethod
    def _accept_s3_paths(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if not isinstance(data, dict) or "s3_paths" not in data:
            return handler(data)
        if "paths" in data:
            raise _error("give either paths or s3_paths, not both", at="s3_paths")
        renamed = dict(data)
        renamed["paths"] = renamed.pop("s3_paths")
        source = handler(renamed)
        source._paths_key = "s3_paths"
        return source

    @property
    def paths_key(self) -> str:
        """``paths`` or ``s3_paths``: what the body called them."""
        return self._paths_key


class DeadLetterQueue(_Strict):
    """Cortex's ``sqs_dead_letter_queue``; only ``max_receive_count`` means anything here."""

    arn: str | None = None
    max_receive_count: _Count


class JobSubmission(_Strict):
    # The published schema says what `_exactly_one_source` checks (null means not given).
    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {"required": [kind], "properties": {kind: {"type": "object"}}}
                for kind in SOURCE_KINDS
            ]
        }
    )

    workers: _Count = 1
    item_list: ItemList | None = None
    delimited_files: FileSource | None = None
    file_path_lister: FileSource | None = None
    config: dict[str, Any] = {}
    timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    # Seconds one handle_batch call may take before its worker is killed.
    batch_timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    # Resolved after validation: the `sqs_dead_letter_queue` form fills it in when given.
    max_receive_count: _Count = DEFAULT_MAX_RECEIVE_COUNT
    sqs_dead_letter_queue: DeadLetterQueue | None = None
    priority: int = Field(default=0, ge=-_INT64_MAX - 1, le=_INT64_MAX)

    @model_validator(mode="after")
    def _exactly_one_source(self) -> JobSubmission:
        given = [kind for kind in SOURCE_KINDS if getattr(self, kind) is not None]
        options = ", ".join(SOURCE_KINDS)
        if not given:
            raise _error(f"the job needs a source: exactly one of {options}", at="item_list")
        if len(given) > 1:
            raise _error(f"give exactly one of {options}, not {' and '.join(given)}", at=given[1])
        return self

    @model_validator(mode="after")
    def _resolve_max_receive_count(self) -> JobSubmission:
        queue = self.sqs_dead_letter_queue
        if queue is None:
            return self
        if "max_receive_count" not in self.model_fields_set:
            self.max_receive_count = queue.max_receive_count
        elif self.max_receive_count != queue.max_receive_count:
            raise _error(
                f"max_receive_count is {self.max_receive_count} but "
                f"sqs_dead_letter_queue.max_receive_count is {queue.max_receive_count}",
                at="max_receive_count",
            )
        return self

    @property
    def source_kind(self) -> SourceKind:
        return next(kind for kind in SOURCE_KINDS if getattr(self, kind) is not None)

    @property
    def source(self) -> ItemList | FileSource:
        source: ItemList | FileSource = getattr(self, self.source_kind)
        return source

    def max_receive_count_value(self) -> int:
        return self.max_receive_count


def parse_submission(body: bytes, max_depth: int = DEFAULT_MAX_JSON_DEPTH) -> JobSubmission:
    try:
        # Strictly, unlike json.loads(bytes): surrogates encoded in the bytes are refused.
        text = body.decode(json.detect_encoding(body))
        data = loads(text)
    except RecursionError as exc:
        raise BadRequest("request body is nested too deeply") from exc
    except ValueError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadRequest(f"request body must be a JSON object, not {json_type(data)}")
    if nested_deeper_than(data, max_depth):
        raise BadRequest(f"request body is nested deeper than {max_depth} levels (max_json_depth)")
    # Only a \uXXXX escape can make one now; most bodies have none and skip the walk.
    if SURROGATE_ESCAPE.search(text):
        where = lone_surrogate_at(data)
        if where is not None:
            raise BadRequest(
                f"request body is not valid JSON: {where or 'it'} holds an unpaired UTF-16 "
                "surrogate escape (\\ud800-\\udfff), which no UTF-8 text can hold",
                where or None,
            )
    try:
        return JobSubmission.model_validate(data)
    except ValidationError as exc:
        raise _invalid(exc) from exc


def _error(message: str, *, at: str) -> PydanticCustomError:
    return PydanticCustomError("submission", "{message}", {"message": message, _AT: at})


def _invalid(exc: ValidationError) -> Invalid:
    errors = exc.errors(include_url=False)
    first = errors[0]
    field = _field_path(first)
    message = f"{field}: {_describe(first)}" if field else _describe(first)
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problems)"
    return Invalid(message, field or None)


def _field_path(error: ErrorDetails) -> str:
    location: list[str | int] = list(error["loc"])
    # Model validators cannot set a location, so they say in `ctx` where the problem is.
    at = error.get("ctx", {}).get(_AT)
    if at is not None:
        location.append(at)
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path


# Pydantic names Python types; users wrote JSON.
_EXPECTED = {
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "list_type": "an array",
    "dict_type": "an object",
    "model_type": "an object",
}


def _describe(error: ErrorDetails) -> str:
    kind = error["type"]
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind in _EXPECTED:
        return f"must be {_EXPECTED[kind]}, not {json_type(error['input'])}"
    return error["msg"]
