from __future__ import annotations

import random
import time
from fnmatch import fnmatchcase

import pytest

from batchd.admission.globs import compile_glob, path_selected


def matches(pattern: str, path: str) -> bool:
    return compile_glob(pattern).fullmatch(path) is not None


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("/data/*.json", "/data/a.json", True),
        ("/data/*.json", "/data/.json", True),
        ("/data/*.json", "/data/x/a.json", False),
        ("/data/*.json", "/data/a.jsonl", False),
        ("/data/*", "/data", False),
        ("/data/a?.txt", "/data/ab.txt", True),
        ("/data/a?.txt", "/data/a.txt", False),
        ("/data/a?.txt", "/data/abc.txt", False),
        ("/data/a?b", "/data/a/b", False),
        ("/data/**/*.json", "/data/a.json", True),
        ("/data/**/*.json", "/data/x/a.json", True),
        ("/data/**/*.json", "/data/x/y/a.json", True),
        ("/data/**/*.json", "/other/a.json", False),
        ("/data/**/*.json", "/data/x/a.txt", False),
        ("/data/**", "/data/a", True),
        ("/data/**", "/data/x/y/z", True),
        ("/data/**", "/data", True),
        ("/data/**", "/database/a", False),
        ("**/*.json", "/data/x/a.json", True),
        ("**/*.json", "a.json", True),
        ("**/*.json", "/data/x/a.txt", False),
        ("**", "/anything/at/all", True),
        ("**", "", True),
        ("*.json", "/data/a.json", False),
        ("/a/**/b/**/c", "/a/b/c", True),
        ("/a/**/b/**/c", "/a/x/b/y/z/c", True),
        ("/a/**/b/**/c", "/a/x/bb/c", False),
        ("/a/**/b/**", "/a/x/b", True),
        ("/a/**/**/c", "/a/c", True),
        ("/a/**/**/c", "/a/x/y/c", True),
        ("/a/x**y/c", "/a/xzzy/c", True),
        ("/a/x**y/c", "/a/xz/y/c", False),
        ("/data/[ab].txt", "/data/a.txt", True),
        ("/data/[ab].txt", "/data/c.txt", False),
        ("/data/[a-c].txt", "/data/b.txt", True),
        ("/data/[!a-c].txt", "/data/b.txt", False),
        ("/data/[!a-c].txt", "/data/d.txt", True),
        ("/data/[^a-c].txt", "/data/d.txt", True),
        ("/data/[]x].txt", "/data/].txt", True),
        ("/data/[]x].txt", "/data/x.txt", True),
        ("/data/[-a].txt", "/data/-.txt", True),
        ("/data/[!a]", "/data/x", True),
        ("/data/[.txt", "/data/[.txt", True),
        ("/data/\\*.txt", "/data/*.txt", True),
        ("/data/\\*.txt", "/data/a.txt", False),
        ("/data/a+b(1).txt", "/data/a+b(1).txt", True),
        ("/data/a.txt", "/data/aXtxt", False),
        ("/data/*", "/data/line\nbreak", True),
        ("/data/*.json", "/data/é.json", True),
    ],
)
def test_matching(pattern: str, path: str, expected: bool) -> None:
    assert matches(pattern, path) is expected


def test_class_does_not_match_slash() -> None:
    # `[!a]` would otherwise let a single-segment wildcard cross into the next directory.
    assert not matches("/data/a[!x]b", "/data/a/b")


def test_invalid_class_range_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="invalid glob"):
        compile_glob("/data/[z-a]")


def reference_match(pattern: str, path: str) -> bool:
    """Slow, obviously right matcher over whole segments, to check the regexes against."""

    def match(pats: list[str], segs: list[str]) -> bool:
        if not pats:
            return not segs
        if pats[0] == "**":
            return any(match(pats[1:], segs[k:]) for k in range(len(segs) + 1))
        return bool(segs) and fnmatchcase(segs[0], pats[0]) and match(pats[1:], segs[1:])

    return match(pattern.split("/"), path.split("/"))


def test_agrees_with_reference_matcher_on_random_cases() -> None:
    rng = random.Random(1234)
    pattern_segments = [
        "a",
        "b",
        "*",
        "?",
        "**",
        "**",
        "a*",
        "*b",
        "*a*",
        "[ab]",
        "[!a]",
        "a?b",
        "",
    ]
    path_segments = ["a", "b", "ab", "ba", "aab", "bab", ""]
    checked = 0
    for _ in range(4000):
        pattern = "/".join(rng.choices(pattern_segments, k=rng.randint(1, 5)))
        path = "/".join(rng.choices(path_segments, k=rng.randint(1, 6)))
        assert matches(pattern, path) is reference_match(pattern, path), (pattern, path)
        checked += matches(pattern, path)
    # Guard against a generator that never produces a match.
    assert checked > 200


@pytest.mark.parametrize(
    ("pattern", "path"),
    [
        ("/**/a" * 12 + "/**/c", "/a" * 60 + "/b"),
        ("/x/" + "*a" * 12 + "*c", "/x/" + "a" * 250 + "b"),
        ("/**/" + "*a" * 8 + "*c/**/d", "/" + "/".join(["a" * 40] * 30) + "/e"),
    ],
)
def test_pathological_patterns_fail_fast(pattern: str, path: str) -> None:
    compiled = compile_glob(pattern)
    started = time.perf_counter()
    assert compiled.fullmatch(path) is None
    assert time.perf_counter() - started < 0.5


def test_path_selected_without_filters_selects_everything() -> None:
    assert path_selected("/data/a.txt", [], [])


def test_path_selected_needs_one_include() -> None:
    includes = [compile_glob("**/*.json"), compile_glob("**/*.jsonl")]
    assert path_selected("/data/a.jsonl", includes, [])
    assert path_selected("/data/a.json", includes, [])
    assert not path_selected("/data/a.txt", includes, [])


def test_path_selected_exclude_wins_over_include() -> None:
    includes = [compile_glob("/data/**")]
    excludes = [compile_glob("**/skip/**"), compile_glob("**/*.tmp")]
    assert path_selected("/data/keep/a.json", includes, excludes)
    assert not path_selected("/data/skip/a.json", includes, excludes)
    assert not path_selected("/data/keep/a.tmp", includes, excludes)


def test_path_selected_excludes_alone() -> None:
    excludes = [compile_glob("**/.*")]
    assert path_selected("/data/a.json", [], excludes)
    assert not path_selected("/data/.hidden", [], excludes)
