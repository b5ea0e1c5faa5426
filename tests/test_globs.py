"""The glob matcher against Cortex's: github.com/gobwas/glob v0.2.3, ``Compile(p, '/')``.

Every expectation in MATCHES and REFUSED was recorded by running that library (the version
Cortex v0.35's go.mod pins) on the same pattern and path, except the few marked where
gobwas's optimiser contradicts its own documented syntax.
"""

from __future__ import annotations

import random
import re
import time
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchd.admission.globs import MAX_PATTERN_CHARS, compile_glob, path_selected


def matches(pattern: str, path: str) -> bool:
    return compile_glob(pattern).match(path)


# Cortex's docs (docs/workloads/batch/jobs.md, "Filtering files"), on this bucket.
IMAGES = [
    "s3://bucket/images/img_1.png",
    "s3://bucket/images/img_2.jpg",
    "s3://bucket/images/img_3.jpg",
    "s3://bucket/images/img_4.gif",
]


@pytest.mark.parametrize(
    ("includes", "excludes", "selected"),
    [
        ([], [], IMAGES),
        (["**.jpg"], [], IMAGES[1:3]),
        (["**.jpg"], ["**_3.jpg"], IMAGES[1:2]),
        ([], ["**.gif"], IMAGES[:3]),
    ],
)
def test_cortex_docs_filtering_examples(
    includes: list[str], excludes: list[str], selected: list[str]
) -> None:
    compiled_includes = [compile_glob(p) for p in includes]
    compiled_excludes = [compile_glob(p) for p in excludes]
    assert [p for p in IMAGES if path_selected(p, compiled_includes, compiled_excludes)] == selected


MATCHES = [
    # `*` stays within a folder; `**` crosses folders, and both may match nothing.
    ("/data/*.json", "/data/a.json", True),
    ("/data/*.json", "/data/.json", True),
    ("/data/*.json", "/data/x/a.json", False),
    ("/data/*.json", "/data/a.jsonl", False),
    ("/data/*", "/data", False),
    ("/data/*", "/data/line\nbreak", True),
    ("/data/*.json", "/data/é.json", True),
    ("*.json", "/data/a.json", False),
    ("*", "/", False),
    ("**", "/anything/at/all", True),
    ("**", "/", True),
    ("/data/**", "/data/a", True),
    ("/data/**", "/data/x/y/z", True),
    ("/data/**", "/database/a", False),
    ("/data/**/*.json", "/data/x/a.json", True),
    ("/data/**/*.json", "/data/x/y/a.json", True),
    ("/data/**/*.json", "/other/a.json", False),
    ("/data/**/*.json", "/data/x/a.txt", False),
    ("**/*.json", "/data/x/a.json", True),
    ("**/*.json", "/data/x/a.txt", False),
    ("/a/**/b/**/c", "/a/x/b/y/z/c", True),
    ("/a/**/b/**/c", "/a/x/bb/c", False),
    ("/a/**/**/c", "/a/x/y/c", True),
    ("/a/x**y/c", "/a/xzzy/c", True),
    # `**` is no path segment of its own: the slashes around it must be there, so these
    # need at least one folder where a "globstar" would take none (batchd before 0.14).
    ("/data/**/*.json", "/data/a.json", False),
    ("/data/**", "/data", False),
    ("**/*.json", "a.json", False),
    ("**/*", "/data", True),
    ("/a/**/b/**/c", "/a/b/c", False),
    ("/a/**/b/**", "/a/x/b", False),
    ("/a/**/**/c", "/a/c", False),
    ("/a/x**y/c", "/a/xz/y/c", True),
    # `?` is one character but `/`.
    ("/data/a?.txt", "/data/ab.txt", True),
    ("/data/a?.txt", "/data/a.txt", False),
    ("/data/a?.txt", "/data/abc.txt", False),
    ("/data/a?b", "/data/a/b", False),
    ("/data/?", "/data/é", True),
    ("?", "/", False),
    # Classes: one range or one list, `!` negates, and a class may match `/`.
    ("/data/[ab].txt", "/data/a.txt", True),
    ("/data/[ab].txt", "/data/c.txt", False),
    ("/data/[a-c].txt", "/data/b.txt", True),
    ("/data/[!a-c].txt", "/data/b.txt", False),
    ("/data/[!a-c].txt", "/data/d.txt", True),
    ("/data/[-a].txt", "/data/-.txt", True),
    ("/data/[!a]", "/data/x", True),
    ("/data/a[!x]b", "/data/a/b", True),
    ("[!!]", "a", True),
    ("[!!]", "!", False),
    ("[]-a]", "^", True),
    ("[\\]]", "]", True),
    # `^` does not negate: `[^a-c]` is the list of ^, a, - and c.
    ("/data/[^a-c].txt", "/data/d.txt", False),
    ("/data/[^a-c].txt", "/data/^.txt", True),
    ("/data/[^a-c].txt", "/data/-.txt", True),
    ("/data/[^a-c].txt", "/data/b.txt", False),
    # Escapes, and characters that are only special somewhere else.
    ("/data/\\*.txt", "/data/*.txt", True),
    ("/data/\\*.txt", "/data/a.txt", False),
    ("/data/a+b(1).txt", "/data/a+b(1).txt", True),
    ("/data/a.txt", "/data/aXtxt", False),
    ("/a/\\", "/a/", True),
    ("\\{a,b\\}", "{a,b}", True),
    ("a,b", "a,b", True),
    ("a}", "a}", True),
    # Alternatives, nested.
    ("**.{jpg,png}", "s3://bucket/images/img_1.png", True),
    ("**.{jpg,png}", "s3://bucket/images/img_4.gif", False),
    ("**/{a,b/c}/*", "/x/b/c/d", True),
    ("**/{a,b/c}/*", "/x/a/d", True),
    ("**/{a,b/c}/*", "/x/b/d", False),
    ("**/{a,{b,c}d}", "/x/cd", True),
    ("**/{a,{b,c}d}", "/x/d", False),
    ("{a\\,b,c}", "a,b", True),
    # The issue's and the docs' shapes, on S3 URLs: a pattern matches the whole URL.
    ("**.jpg", "s3://bucket/images/img_2.jpg", True),
    ("**.jpg", "s3://bucket/images/img_1.png", False),
    ("**.jpg", "s3://bucket/img.jpg", True),
    ("**_3.jpg", "s3://bucket/images/img_3.jpg", True),
    ("**_3.jpg", "s3://bucket/images/img_2.jpg", False),
    ("**.gif", "s3://bucket/images/img_4.gif", True),
    ("**/*.jpg", "s3://bucket/images/img_2.jpg", True),
    ("**/*.jpg", "s3://bucket/img_2.jpg", True),
    ("*.jpg", "s3://bucket/images/img_2.jpg", False),
    ("images/**", "s3://bucket/images/img_2.jpg", False),
    ("**/images/**", "s3://bucket/images/img_2.jpg", True),
    ("**/images/**", "s3://bucket/images", False),
    ("s3://bucket/images/*", "s3://bucket/images/img_2.jpg", True),
    ("s3://bucket/images/*", "s3://bucket/images/sub/img_2.jpg", False),
    ("s3://bucket/**", "s3://bucket/images/sub/img_2.jpg", True),
    ("s3://*/images/*.jpg", "s3://bucket/images/img_2.jpg", True),
    ("s3://*/images/*.jpg", "s3://my/bucket/images/img_2.jpg", False),
    ("**/img_[1-2].*", "s3://bucket/images/img_2.jpg", True),
    ("**/img_[1-2].*", "s3://bucket/images/img_3.jpg", False),
    ("**/img_[!1-2].*", "s3://bucket/images/img_3.jpg", True),
]


@pytest.mark.parametrize(("pattern", "path", "expected"), MATCHES)
def test_matches_as_gobwas_glob_does(pattern: str, path: str, expected: bool) -> None:
    assert matches(pattern, path) is expected


@pytest.mark.parametrize(
    ("pattern", "path"),
    [
        # gobwas says no: its fixed-width matcher counts bytes, so non-ASCII text next
        # to a class or `?` misses. Its syntax says one character; batchd counts characters.
        ("/data/[é]", "/data/é"),
        ("?-", "é-"),
        # gobwas says no: `***` is `**` then `*`, which its optimiser joins wrongly.
        ("[!a]***", "*"),
        # gobwas says no: alternatives holding wildcards, joined wrongly.
        ("?{*,?}", ".\\^,"),
        # gobwas says no: an empty alternative (matching nothing) next to wildcards.
        ("/data/?{a,}*", "/data/b"),
    ],
)
def test_where_gobwas_contradicts_its_own_syntax_batchd_follows_the_syntax(
    pattern: str, path: str
) -> None:
    assert matches(pattern, path)


REFUSED = [
    # pattern, what the message says (gobwas: unexpected end of input)
    ("/data/[.txt", "the '[' at offset 6 is not closed"),
    ("/data/[", "the '[' at offset 6 is not closed"),
    ("/data/[!", "the '[' at offset 6 is not closed"),
    ("[ab", "the '[' at offset 0 is not closed"),
    ("[a\\]", "the '[' at offset 0 is not closed"),
    ("[a-", "the '[' at offset 0 is not closed"),
    ("[a-]", "the '[' at offset 0 is not closed"),
    # gobwas: could not parse range
    ("[]", "the class at offset 0 is empty"),
    ("[!]", "the class at offset 0 is empty"),
    ("[]x]", "the class at offset 0 is empty"),
    ("[]]", "the class at offset 0 is empty"),
    # gobwas: hi character 'a' should be greater than lo 'z'
    ("/data/[z-a]", "the range z-a at offset 6 is reversed"),
    ("[é-a]", "the range é-a at offset 0 is reversed"),
    ("[a-]]", "the range a-] at offset 0 is reversed"),
    # gobwas: expected close range character
    ("[a-cx]", "holds more than one range"),
    # gobwas: could not read rune
    ("a\ufffdb", "U+FFFD cannot appear"),
    # batchd's own: gobwas accepts these, then panics or mis-matches.
    ("x{", "the '{' at offset 1 is not closed"),
    ("{a,{b}", "the '{' at offset 0 is not closed"),
    ("a\0b", "a NUL character cannot appear"),
    ("{" * 65 + "a" + "}" * 65, "alternatives nest deeper than 64 levels"),
]


@pytest.mark.parametrize(("pattern", "reason"), REFUSED)
def test_malformed_patterns_are_refused(pattern: str, reason: str) -> None:
    with pytest.raises(ValueError, match="invalid glob") as refused:
        compile_glob(pattern)
    assert reason in str(refused.value)


def test_an_overlong_pattern_is_refused() -> None:
    compile_glob("a" * MAX_PATTERN_CHARS)
    with pytest.raises(ValueError, match=f"over the limit of {MAX_PATTERN_CHARS}"):
        compile_glob("a" * (MAX_PATTERN_CHARS + 1))


# Pattern pieces with the regex each means, for a reference matcher built independently of
# the parser: Python's backtracking `re` is exact, and quick enough on these tiny inputs.
PIECES = [
    ("a", "a"),
    ("b", "b"),
    ("/", "/"),
    (".", r"\."),
    ("*", "[^/]*"),
    ("**", ".*"),
    ("?", "[^/]"),
    ("[ab]", "[ab]"),
    ("[!a]", "[^a]"),
    ("[a-b]", "[a-b]"),
    ("[!/]", "[^/]"),
    ("[^a]", r"[\^a]"),
    ("{a,b}", "(?:a|b)"),
    ("{a/,b*}", "(?:a/|b[^/]*)"),
    ("{**,?}", "(?:.*|[^/])"),
    ("{a,}", "(?:a|)"),
    ("\\*", r"\*"),
    ("\\{", r"\{"),
    (",", ","),
]


def random_pattern(rng: random.Random) -> tuple[str, str]:
    glob, regex = "", ""
    for _ in range(rng.randint(1, 7)):
        piece, meaning = rng.choice(PIECES)
        # Stars next to stars would lex differently (`*` + `*` is `**`).
        if glob.endswith("*") and piece.startswith(("*", "{**")):
            continue
        glob, regex = glob + piece, regex + meaning
    return glob, regex


def test_agrees_with_a_reference_matcher_on_random_cases() -> None:
    rng = random.Random(1234)
    alphabet = ["a", "b", "/", ".", "ab", "^", "*", "{", ","]
    matched = 0
    for _ in range(3000):
        glob, regex = random_pattern(rng)
        compiled, reference = compile_glob(glob), re.compile(regex, re.DOTALL)
        for _ in range(6):
            path = "".join(rng.choices(alphabet, k=rng.randint(1, 7)))
            expected = reference.fullmatch(path) is not None
            assert compiled.match(path) is expected, (glob, path)
            matched += expected
    # Guard against a generator that never produces a match.
    assert matched > 1000


def test_paths_in_one_folder_share_the_folders_state_without_mixing_it_up() -> None:
    glob = compile_glob("**/x/*.json")
    assert [glob.match(p) for p in ["/d/x/a.json", "/d/x/b.txt", "/d/y/a.json", "x/a.json"]] == [
        True,
        False,
        False,
        False,
    ]
    # The same folder text with and without its slash is two different prefixes.
    assert compile_glob("*").match("ba") and not compile_glob("*").match("/ba")


@pytest.mark.parametrize(
    ("pattern", "path"),
    [
        ("/**/a" * 12 + "/**/c", "/a" * 60 + "/b"),
        ("/x/" + "*a" * 12 + "*c", "/x/" + "a" * 250 + "b"),
        ("/**/" + "*a" * 8 + "*c/**/d", "/" + "/".join(["a" * 40] * 30) + "/e"),
        ("**" + "[!x]**" * 30 + "c", "y" * 1000),
        ("{a,a}" * 40 + "b", "a" * 40 + "c"),
        # The DFA of `**a` then n `?` has 2^n states: past its cap, steps go on uncached.
        ("**a" + "?" * 16, "ab" * 500),
    ],
)
def test_pathological_patterns_fail_fast(pattern: str, path: str) -> None:
    compiled = compile_glob(pattern)
    started = time.perf_counter()
    assert not compiled.match(path)
    assert time.perf_counter() - started < 1.0


def test_the_dfa_cap_keeps_answers_exact() -> None:
    glob = compile_glob("**a" + "?" * 14)
    reference = re.compile(".*a" + "[^/]" * 14, re.DOTALL)
    rng = random.Random(7)
    for _ in range(200):
        path = "".join(rng.choices("ab", k=rng.randint(10, 40)))
        assert glob.match(path) is (reference.fullmatch(path) is not None), path


def test_a_hostile_pattern_is_held_in_bounded_memory() -> None:
    # Each path of `**a` then 4,000 `?` reaches ~1,000 new DFA states of hundreds of NFA
    # nodes each: kept (or kept alive through their moves), 12 paths took ~200 MB, and
    # the paths of one listing gigabytes. The caps keep it to tens of MB, answers exact.
    glob = compile_glob("**a" + "?" * 4000)
    rng = random.Random(3)
    paths = ["".join(rng.choices("ab", k=1000)) for _ in range(12)]
    tracemalloc.start()
    try:
        assert not any(glob.match(path) for path in paths)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 80 * 1024 * 1024
    assert glob.match("a" + "b" * 4000) and not glob.match("b" + "a" + "b" * 3999)


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


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab/*?[]!-{},\\^é."), max_size=20), st.text(max_size=12))
def test_any_pattern_compiles_or_is_refused_with_a_value_error(pattern: str, path: str) -> None:
    try:
        glob = compile_glob(pattern)
    except ValueError as refused:
        assert str(refused).startswith("invalid glob")
    else:
        assert glob.match(path) in (True, False)
