"""Path globs as Cortex matched them: github.com/gobwas/glob v0.2.3, compiled with ``/`` as
the separator and matched against the whole path (``s3://bucket/key``, or a local file's
absolute path as given).

``*`` is any run of characters but ``/``, ``**`` any run at all (slashes too, so ``**.jpg``
is every ``.jpg`` at any depth, and ``/data/**/*.jpg`` needs a folder below ``/data``),
``?`` one character but ``/``, ``[abc]`` / ``[!abc]`` a character in (not in) the list,
``[a-z]`` / ``[!a-z]`` one in (not in) the range (a class may match ``/``), ``{a,b}`` one of
the alternatives (nested), and ``\\`` makes the next character literal. The class syntax is
gobwas's, quirks included: a class is either a single range or a list, ``^`` does not
negate, and ``[]``, an unclosed ``[`` or a reversed range is an error. An unclosed ``{``,
which gobwas closes at the end and then often mis-matches or panics on, is an error too.

Patterns come from users and are matched in the daemon, so no regex engine that backtracks
runs them: a pattern becomes an NFA, matched through a DFA built lazily one move at a time.
Every path costs one step a character; the DFA's size is capped (in states, in the NFA
nodes they hold and in moves), and past the cap a step is an NFA step instead (polynomial,
never exponential) whose state is forgotten once used, so a hostile pattern such as
``**a`` then 4,000 ``?`` costs time but no more memory than the caps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

# Longer patterns are refused: no path is that long (S3 keys stop at 1,024 bytes, local
# paths at PATH_MAX), and an NFA step costs up to the pattern's length.
MAX_PATTERN_CHARS = 4096
_MAX_STATES = 10_000
# The NFA nodes all kept states hold together: a state of a long pattern may hold thousands
# (``**a`` then 4,000 ``?``), and 10,000 such states would take gigabytes.
_MAX_STATE_NODES = 1_000_000
_MAX_MOVES = 500_000
_MAX_FOLDERS = 4096
# `{` nests no deeper than this (the NFA is built recursively).
_MAX_NESTING = 64

_SEPARATOR = "/"
# Characters that end a run of literal text, outside and inside `{...}`.
_TEXT_BREAKERS = frozenset("?*[{")
_TERMS_BREAKERS = _TEXT_BREAKERS | {"}", ","}
_CLASS_END = frozenset("]")

Test = Callable[[str], bool]


# --- Parsing: gobwas's lexer and parser, as one pass ----------------------------------------


@dataclass
class _Seq:
    items: list[_Node]


@dataclass
class _Alt:
    branches: list[_Seq]


@dataclass(frozen=True)
class _Char:
    test: Test


@dataclass(frozen=True)
class _Star:
    test: Test


_Node = _Seq | _Alt | _Char | _Star


class _Parser:
    def __init__(self, pattern: str) -> None:
        self.text = pattern
        self.pos = 0

    def fail(self, reason: str) -> ValueError:
        return ValueError(f"invalid glob {self.text!r}: {reason}")

    def parse(self) -> _Seq:
        for bad, name in (("\0", "a NUL character"), ("\ufffd", "U+FFFD")):
            if bad in self.text:
                raise self.fail(f"{name} cannot appear in a pattern")
        root = _Seq([])
        # The sequences being filled, innermost last: `{` opens one, `}` closes it.
        open_seqs = [root]
        braces: list[int] = []
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            current = open_seqs[-1]
            inside = len(open_seqs) > 1
            if char == "{":
                braces.append(self.pos)
                if len(braces) > _MAX_NESTING:
                    raise self.fail(f"alternatives nest deeper than {_MAX_NESTING} levels")
                self.pos += 1
                branch = _Seq([])
                current.items.append(_Alt([branch]))
                open_seqs.append(branch)
            elif char == "," and inside:
                self.pos += 1
                branch = _Seq([])
                parent = open_seqs[-2].items[-1]
                assert isinstance(parent, _Alt)
                parent.branches.append(branch)
                open_seqs[-1] = branch
            elif char == "}" and inside:
                self.pos += 1
                braces.pop()
                open_seqs.pop()
            elif char == "[":
                self.pos += 1
                current.items.append(self._char_class())
            elif char == "?":
                self.pos += 1
                current.items.append(_Char(_not_separator))
            elif char == "*":
                double = text.startswith("**", self.pos)
                self.pos += 2 if double else 1
                current.items.append(_Star(_anything if double else _not_separator))
            else:
                breakers = _TERMS_BREAKERS if inside else _TEXT_BREAKERS
                current.items.extend(_Char(c.__eq__) for c in self._literal(breakers))
        if braces:
            # gobwas closes it at the end, then often panics or matches wrongly.
            raise self.fail(f"the '{{' at offset {braces[-1]} is not closed")
        return root

    def _literal(self, breakers: frozenset[str]) -> str:
        """Literal text up to an unescaped breaker; a trailing backslash is dropped."""
        text = self.text
        chars: list[str] = []
        escaped = False
        while self.pos < len(text):
            char = text[self.pos]
            if not escaped:
                if char == "\\":
                    escaped = True
                    self.pos += 1
                    continue
                if char in breakers:
                    break
            escaped = False
            chars.append(char)
            self.pos += 1
        return "".join(chars)

    def _char_class(self) -> _Char:
        """The class after a `[`: `[!]` then one range `lo-hi`, or a list up to `]`."""
        text = self.text
        opened = self.pos - 1
        negated = text.startswith("!", self.pos)
        if negated:
            self.pos += 1
        if self.pos >= len(text):
            raise self.fail(f"the '[' at offset {opened} is not closed")
        if text.startswith("-", self.pos + 1):
            low, high = text[self.pos], text[self.pos + 2 : self.pos + 3]
            self.pos += 3
            if not high or self.pos >= len(text):
                raise self.fail(f"the '[' at offset {opened} is not closed")
            if text[self.pos] != "]":
                raise self.fail(
                    f"the class at offset {opened} holds more than one range: "
                    "a class is one range or a list"
                )
            self.pos += 1
            if high < low:
                raise self.fail(f"the range {low}-{high} at offset {opened} is reversed")
            return _Char(_in_range(low, high, negated))
        members = self._literal(_CLASS_END)
        if self.pos >= len(text):
            raise self.fail(f"the '[' at offset {opened} is not closed")
        self.pos += 1
        if not members:
            raise self.fail(f"the class at offset {opened} is empty")
        return _Char(_in_list(frozenset(members), negated))


def _not_separator(char: str) -> bool:
    return char != _SEPARATOR


def _anything(char: str) -> bool:
    return True


def _in_range(low: str, high: str, negated: bool) -> Test:
    return lambda char: (low <= char <= high) is not negated


def _in_list(members: frozenset[str], negated: bool) -> Test:
    return lambda char: (char in members) is not negated


# --- Matching: an NFA, run as a lazily built DFA --------------------------------------------


@dataclass(frozen=True)
class _Nfa:
    """Node 0 accepts. A node with a test consumes one character that passes it and goes
    on to its one successor; a node without one (but node 0) is an epsilon split."""

    tests: list[Test | None]
    successors: list[tuple[int, ...]]

    def closure(self, nodes: Sequence[int]) -> frozenset[int]:
        """The test nodes and the accepting node reachable from `nodes` through splits."""
        seen: set[int] = set()
        found: set[int] = set()
        pending = list(nodes)
        while pending:
            node = pending.pop()
            if node in seen:
                continue
            seen.add(node)
            if node == 0 or self.tests[node] is not None:
                found.add(node)
            else:
                pending.extend(self.successors[node])
        return frozenset(found)

    def step(self, nodes: frozenset[int], char: str) -> frozenset[int]:
        tests, successors = self.tests, self.successors
        after = [
            successors[node][0]
            for node in nodes
            if (test := tests[node]) is not None and test(char)
        ]
        return self.closure(after)


def _build_nfa(root: _Seq) -> tuple[_Nfa, int]:
    tests: list[Test | None] = [None]
    successors: list[tuple[int, ...]] = [()]

    def add(test: Test | None, after: tuple[int, ...]) -> int:
        tests.append(test)
        successors.append(after)
        return len(tests) - 1

    def build(node: _Node, after: int) -> int:
        """The start of `node`'s automaton, which goes on to `after` (built backwards)."""
        if isinstance(node, _Seq):
            for item in reversed(node.items):
                after = build(item, after)
            return after
        if isinstance(node, _Alt):
            return add(None, tuple(build(branch, after) for branch in node.branches))
        if isinstance(node, _Char):
            return add(node.test, (after,))
        loop = add(None, ())
        successors[loop] = (add(node.test, (loop,)), after)
        return loop

    start = build(root, 0)
    return _Nfa(tests, successors), start


class _State:
    __slots__ = ("accepting", "moves", "nodes")

    def __init__(self, nodes: frozenset[int]) -> None:
        self.nodes = nodes
        self.accepting = 0 in nodes
        self.moves: dict[str, _State] = {}


class Glob:
    """A compiled pattern; ``match`` tells whether it matches a whole path."""

    def __init__(self, pattern: str) -> None:
        if len(pattern) > MAX_PATTERN_CHARS:
            raise ValueError(
                f"invalid glob: it is {len(pattern)} characters long, "
                f"over the limit of {MAX_PATTERN_CHARS}"
            )
        self.pattern = pattern
        self._nfa, start = _build_nfa(_Parser(pattern).parse())
        self._states: dict[frozenset[int], _State] = {}
        self._state_nodes = 0
        self._moves = 0
        self._start = self._state(self._nfa.closure([start]))
        self._dead = self._state(frozenset())
        self._folders: dict[str, _State] = {}

    def __repr__(self) -> str:
        return f"Glob({self.pattern!r})"

    def match(self, path: str) -> bool:
        # Paths come folder by folder, so the state after a path's folder is remembered:
        # most paths then cost a step for each character of their file name only.
        cut = path.rfind(_SEPARATOR) + 1
        folder = path[:cut]
        state = self._folders.get(folder)
        if state is None:
            state = self._run(self._start, folder)
            # Only a kept state is remembered: one past the caps must not stay alive.
            if self._kept(state):
                if len(self._folders) >= _MAX_FOLDERS:
                    self._folders.clear()
                self._folders[folder] = state
        return self._run(state, path[cut:]).accepting

    def _run(self, state: _State, text: str) -> _State:
        dead = self._dead
        for char in text:
            after = state.moves.get(char)
            if after is None:
                after = self._move(state, char)
            if after is dead:
                return dead
            state = after
        return state

    def _move(self, state: _State, char: str) -> _State:
        after = self._state(self._nfa.step(state.nodes, char))
        # A move is kept between kept states only: a forgotten state reached from a kept
        # one would otherwise stay alive through the move, and past the caps every step
        # would keep one.
        if self._moves < _MAX_MOVES and self._kept(state) and self._kept(after):
            self._moves += 1
            state.moves[char] = after
        return after

    def _kept(self, state: _State) -> bool:
        return self._states.get(state.nodes) is state

    def _state(self, nodes: frozenset[int]) -> _State:
        state = self._states.get(nodes)
        if state is None:
            state = _State(nodes)
            # Past the caps a state is used once and forgotten, so memory stays bounded.
            if (
                len(self._states) < _MAX_STATES
                and self._state_nodes + len(nodes) <= _MAX_STATE_NODES
            ):
                self._states[nodes] = state
                self._state_nodes += len(nodes)
        return state


def compile_glob(pattern: str) -> Glob:
    """The compiled ``pattern``; ValueError, saying why, when gobwas/glob would refuse it."""
    return Glob(pattern)


def path_selected(path: str, includes: Sequence[Glob], excludes: Sequence[Glob]) -> bool:
    """Cortex's filter: kept when it matches an include (or there are none) and no exclude."""
    if includes and not any(glob.match(path) for glob in includes):
        return False
    return not any(glob.match(path) for glob in excludes)
