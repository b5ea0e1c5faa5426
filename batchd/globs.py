"""Cortex-style path globs, matched against a file's full path.

``*`` and ``?`` stay within one path segment, ``[...]`` is a character class (``[!...]`` or
``[^...]`` negates it) and a ``**`` segment spans any number of segments, including none.
A backslash makes the next character literal.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_ANY_IN_SEGMENT = "[^/]*"


def compile_glob(pattern: str) -> re.Pattern[str]:
    """Translate ``pattern`` into a regex for ``fullmatch``; ValueError if it cannot be used."""
    parts: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            i = _translate_stars(pattern, i, parts)
        elif char == "?":
            parts.append("[^/]")
            i += 1
        elif char == "[":
            i = _translate_class(pattern, i, parts)
        elif char == "\\" and i + 1 < len(pattern):
            parts.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            parts.append(re.escape(char))
            i += 1
    try:
        # DOTALL: file names may contain newlines, and `*` must cover them too.
        return re.compile("".join(parts), re.DOTALL)
    except re.error as exc:
        raise ValueError(f"invalid glob {pattern!r}: {exc}") from exc


def path_selected(
    path: str, includes: Sequence[re.Pattern[str]], excludes: Sequence[re.Pattern[str]]
) -> bool:
    if includes and not any(p.fullmatch(path) for p in includes):
        return False
    return not any(p.fullmatch(path) for p in excludes)


def _translate_stars(pattern: str, start: int, parts: list[str]) -> int:
    """Append the regex for the run of ``*`` at ``start``; return the index after it."""
    end = start
    while end < len(pattern) and pattern[end] == "*":
        end += 1
    opens_segment = start == 0 or pattern[start - 1] == "/"
    closes_segment = end == len(pattern) or pattern[end] == "/"
    if end - start < 2 or not (opens_segment and closes_segment):
        # Stars inside a segment (`a**b`) cannot cross a `/`, like a single `*`.
        parts.append(_ANY_IN_SEGMENT)
        return end
    if end < len(pattern):
        # `**/` may also match nothing, so it swallows its own slash: `/a/**/b` matches `/a/b`.
        parts.append("(?:.*/)?")
        return end + 1
    if start == 0:
        parts.append(".*")
    else:
        # A trailing `/**` covers the directory itself too (zero segments), so the slash
        # already emitted before it becomes optional.
        parts[-1] = "(?:/.*)?"
    return end


def _translate_class(pattern: str, start: int, parts: list[str]) -> int:
    """Append the regex for the ``[...]`` at ``start``; an unclosed ``[`` is a literal."""
    i = start + 1
    negated = i < len(pattern) and pattern[i] in "!^"
    if negated:
        i += 1
    body_start = i
    # A `]` right after the opening bracket is a member, not the end of the class.
    if i < len(pattern) and pattern[i] == "]":
        i += 1
    close = pattern.find("]", i)
    if close == -1:
        parts.append(re.escape("["))
        return start + 1
    body = "".join("-" if c == "-" else re.escape(c) for c in pattern[body_start:close])
    # Classes never match `/`, like `*` and `?`.
    parts.append(f"[^/{body}]" if negated else f"(?!/)[{body}]")
    return close + 1
