"""The README and docs/: every relative link resolves, to a file and to a heading in it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import REPO

PAGES = [REPO / "README.md", REPO / "CHANGELOG.md", *sorted((REPO / "docs").glob("*.md"))]
# [text](target), skipping images' and code spans' look-alikes by requiring no space inside.
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)


def anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens, and -1,
    -2... after a repeated one."""
    seen: dict[str, int] = {}
    found = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        heading = re.match(r"#{1,6} (.*)", line)
        if not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def relative_links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text())
    text = re.sub(r"`[^`\n]*`", "", text)
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def test_the_pages_exist() -> None:
    """The README keeps a newcomer's five minutes; the rest lives in docs/, one topic each."""
    names = {page.name for page in PAGES}
    for topic in ["handler.md", "submitting.md", "http-api.md", "cli.md", "configuration.md"]:
        assert topic in names
    for topic in ["systemd.md", "reliability.md", "metrics-dashboard.md", "cortex.md"]:
        assert topic in names
    assert {"several-machines.md", "benchmarks.md"} <= names
    assert len((REPO / "README.md").read_text().splitlines()) < 400


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved.name}")
    assert not broken, broken


def test_the_checker_sees_a_broken_link(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## Two words\n\n[ok](#two-words) [bad](#nope) [gone](gone.md)\n")
    assert anchors(page) == {"title", "two-words"}
    assert relative_links(page) == ["#two-words", "#nope", "gone.md"]
