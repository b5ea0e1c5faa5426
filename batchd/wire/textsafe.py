"""Text that UTF-8 can always carry (standard library only: workers import it).

Bytes decoded with ``surrogateescape`` (file names, subprocess output) become strings
holding lone surrogates, which no UTF-8 encoder accepts. Where such text only has to be
read by people (an error message, a log line), each lone surrogate is spelled out as
its escape (``\\udcff``) instead of failing whatever was about to send or store it.
"""

from __future__ import annotations

from typing import Any


def escape_surrogates(text: str) -> str:
    """`text`, with each lone surrogate written as a backslash escape."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def escape_surrogates_in(value: Any) -> Any:
    """A copy of a decoded JSON value with `escape_surrogates` applied to every string,
    object keys included."""
    if isinstance(value, str):
        return escape_surrogates(value)
    if isinstance(value, dict):
        return {
            escape_surrogates_in(key): escape_surrogates_in(item) for key, item in value.items()
        }
    if isinstance(value, list):
        return [escape_surrogates_in(item) for item in value]
    return value
