"""Cortex-style path globs, matched against a file's full path.

``*`` and ``?`` stay within one path segment, ``[...]`` is a character class (``[!...]`` or
``[^...]`` negates it) and a ``**`` segment spans any number of segments, including none.
A backslash makes the next character literal.

Patterns come from users and are matched in the daemon, so the regexes are built to avoid
catastrophic backtracking: every wildcard that is followed by another wildcard of the same
kind is matched at its earliest position inside an atomic group. That is exact, because the
later wildcard can absorb whatever an earlier choice would have left over, and it keeps
matching roughly linear in the path length instead of exponential in the number of stars.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_GLOBSTAR = "**"


def compile_glob(pattern: str) -> re.Pattern[str]:
    """Translate ``pattern`` into a regex meant for ``fullmatch``; ValueError if unusable."""
    try:
        # DOTALL: file names may contain newlines, and wildcards must cover them too.
        return re.compile(_translate(pattern.split("/")), re.DOTALL)
    except re.error as exc:
        raise ValueError(f"invalid glob {pattern!r}: {exc.msg}") from exc


def path_selected(
    path: str, includes: Sequence[re.Pattern[str]], excludes: Sequence[re.Pattern[str]]
) -> bool:
    if includes and not any(p.fullmatch(path) for p in includes):
        return False
    return not any(p.fullmatch(path) for p in excludes)


def _translate(segments: list[str]) -> str:
    chunks = _split_at_globstars(segments)
    if len(chunks) == 1:
        return _chunk(chunks[0])
    head, *middle, tail = chunks
    parts = [_chunk(head)]
    # Once any segment has been emitted, a `/` separates it from what a `**` matches.
    started = bool(head)
    for chunk in middle:
        separator = "/" if started else ""
        parts.append(f"{separator}(?>(?:.*?/)??{_chunk(chunk)}(?![^/]))")
        started = True
    if tail:
        parts.append(("/" if started else "") + "(?:.*/)?" + _chunk(tail))
    else:
        # A trailing `**` may match zero segments, so `/data/**` also matches `/data`.
        parts.append("(?:/.*)?" if started else ".*")
    return "".join(parts)


def _split_at_globstars(segments: list[str]) -> list[list[str]]:
    """Group the segments between ``**``s; adjacent ``**``s mean the same as one."""
    chunks: list[list[str]] = [[]]
    for index, segment in enumerate(segments):
        if segment != _GLOBSTAR:
            chunks[-1].append(segment)
        elif index == 0 or segments[index - 1] != _GLOBSTAR:
            chunks.append([])
    return chunks


def _chunk(segments: list[str]) -> str:
    return "/".join(_segment(segment) for segment in segments)


def _segment(segment: str) -> str:
    pieces = _split_at_stars(segment)
    if len(pieces) == 1:
        return pieces[0]
    first, *middle, last = pieces
    lazy = "".join(f"(?>[^/]*?{piece})" for piece in middle)
    return f"{first}{lazy}[^/]*{last}"


def _split_at_stars(segment: str) -> list[str]:
    """Translate the fixed-width pieces between runs of ``*`` into regexes."""
    pieces: list[list[str]] = [[]]
    after_star = False
    i = 0
    while i < len(segment):
        char = segment[i]
        if char == "*":
            # `a**b` inside a segment is no globstar: the run counts as one `*`.
            if not after_star:
                pieces.append([])
            after_star = True
            i += 1
            continue
        after_star = False
        if char == "?":
            pieces[-1].append("[^/]")
            i += 1
        elif char == "[":
            atom, i = _char_class(segment, i)
            pieces[-1].append(atom)
        elif char == "\\" and i + 1 < len(segment):
            pieces[-1].append(re.escape(segment[i + 1]))
            i += 2
        else:
            pieces[-1].append(re.escape(char))
            i += 1
    return ["".join(piece) for piece in pieces]


def _char_class(segment: str, start: int) -> tuple[str, int]:
    """Translate the ``[...]`` at ``start``; an unclosed ``[`` is a literal."""
    i = start + 1
    negated = i < len(segment) and segment[i] in "!^"
    if negated:
        i += 1
    body_start = i
    # A `]` right after the opening bracket is a member, not the end of the class.
    if i < len(segment) and segment[i] == "]":
        i += 1
    close = segment.find("]", i)
    if close == -1:
        return re.escape("["), start + 1
    body = "".join("-" if c == "-" else re.escape(c) for c in segment[body_start:close])
    # Classes never match `/`, like `*` and `?`.
    return (f"[^/{body}]" if negated else f"(?!/)[{body}]"), close + 1
