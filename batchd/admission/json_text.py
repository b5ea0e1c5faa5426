"""JSON as admission reads and writes it: strict parsing, one encoding, checks on the shape.

Items are re-encoded with :data:`ENCODER` everywhere, so sizes and payloads agree.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)

# Only a \uXXXX escape can put an unpaired surrogate into parsed text.
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTAINERS: frozenset[type] = frozenset({dict, list})


def loads(text: bytes | str) -> Any:
    """json.loads, refusing NaN, Infinity and numbers out of a float's range (ValueError)."""
    return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _finite_float(text: str) -> float:
    value = float(text)
    # Python reads 1e400 as inf, which no JSON encoder can write back out.
    if math.isinf(value):
        raise ValueError(f"number {text} is out of range")
    return value


def nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether objects/arrays nest more than `limit` levels (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if depth > limit:
            return True
        # A long list of scalars (a million items) is told apart in C, not walked.
        if isinstance(node, list) and not _CONTAINERS & set(map(type, node)):
            continue
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def lone_surrogate_at(value: Any) -> str | None:
    """The path (``config.key``, ``item_list.items[3]``) of a string, key or value,
    holding an unpaired surrogate, which cannot be stored or sent on as UTF-8; ``""`` for the
    value itself, None when there is none. Iterative, like :func:`nested_deeper_than`."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            if _SURROGATE.search(node):
                return path
        elif isinstance(node, dict):
            for key, child in node.items():
                # The key itself goes into the path escaped: the path is sent back as text.
                name = key.encode("utf-8", "backslashreplace").decode()
                child_path = f"{path}.{name}" if path else name
                if _SURROGATE.search(key):
                    return child_path
                stack.append((child, child_path))
        elif isinstance(node, list):
            stack.extend((child, f"{path}[{index}]") for index, child in enumerate(node))
    return None


def json_type(value: object) -> str:
    """What a parsed value was in the JSON text, for messages: users wrote JSON, not Python."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"
