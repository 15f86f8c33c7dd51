"""The docs' shape (issue 31): README is the front door, at most 400 lines, and every relative
link in it and in bench/'s Markdown leads to a file that exists (and, for a Markdown file, to a
heading it has). The pages under docs/ are checked by `make docs` (MkDocs, strict), which
`make test` runs; README and bench/ are outside MkDocs' docs_dir, so they are checked here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from localstack.paths import ROOT

FRONT_DOOR_MAX_LINES = 400
LINK = re.compile(r"\]\(([^)\s]+)\)")
CODE_BLOCK = re.compile(r"^ *```.*?^ *```", re.S | re.M)
CHECKED = [ROOT / "README.md", *sorted((ROOT / "bench").glob("*.md"))]


def heading_anchors(markdown: str) -> set[str]:
    """The ids MkDocs' toc extension (and, for these headings, GitHub) gives each heading."""
    anchors = set()
    for line in CODE_BLOCK.sub("", markdown).splitlines():
        if match := re.match(r"#{1,6} +(.+?) *$", line):
            text = re.sub(r"[`*]", "", match.group(1)).lower()
            slug = re.sub(r"[^\w\s-]", "", text).strip()
            anchors.add(re.sub(r"[-\s]+", "-", slug))
    return anchors


def relative_links(path: Path) -> list[str]:
    text = CODE_BLOCK.sub("", path.read_text())
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def test_readme_is_a_front_door_of_at_most_400_lines() -> None:
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= FRONT_DOOR_MAX_LINES, f"README.md has {lines} lines"


@pytest.mark.parametrize("path", CHECKED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path: Path) -> None:
    links = relative_links(path)
    broken = []
    for link in links:
        target, _, anchor = link.partition("#")
        file = (path.parent / target).resolve() if target else path
        if not file.exists():
            broken.append(f"{link}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in heading_anchors(file.read_text()):
            broken.append(f"{link}: no heading with that anchor")
    assert not broken, f"{path.name}: {broken}"


def test_readme_links_every_page_of_the_docs_site() -> None:
    """A page the site has but the front door does not name is a page a newcomer never finds."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def pages(nav: object) -> list[str]:
        if isinstance(nav, str):
            return [nav]
        if isinstance(nav, dict):
            return [p for value in nav.values() for p in pages(value)]
        if isinstance(nav, list):
            return [p for item in nav for p in pages(item)]
        return []

    linked = {link.partition("#")[0] for link in relative_links(ROOT / "README.md")}
    missing = [p for p in pages(config["nav"]) if f"docs/{p}" not in linked]
    assert not missing, f"README links no page for {missing}"
