"""The docs' shape (issue 31): README is the front door, at most 400 lines, and every relative
link in it and in bench/'s Markdown leads to a file that exists (and, for a Markdown file, to a
heading it has). The pages under docs/ are checked by `make docs` (MkDocs, strict), which
`make test` runs; README and bench/ are outside MkDocs' docs_dir, so they are checked here.
The console examples are run against `make dev` by tests/test_dev_stack.py."""

from __future__ import annotations

import inspect
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from localstack.paths import ROOT
from tests.support.console_blocks import console_blocks, mismatch, screen

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


def test_console_output_is_compared_as_a_terminal_shows_it() -> None:
    """The comparison the docs' console examples go through (tests/test_dev_stack.py runs them):
    what changes from run to run is normalised, what the docs promise is not."""
    raw = ("   0.0 s  PENDING     created\r\n\rPROCESSING [###.......]  30% slept 0.9 of 3 s"
           "\rPROCESSING [######....]  60% slept 1.8 of 3 s\r\n"
           "job       01a24f86-86a6-773d-94e6-1108fe8e8edf\r\n")
    shown = screen(raw)
    assert shown == ["   0.0 s  PENDING     created",
                     "PROCESSING [######....]  60% slept 1.8 of 3 s",
                     "job       01a24f86-86a6-773d-94e6-1108fe8e8edf"]
    documented = ["  12.5 s  PENDING  created",
                  "PROCESSING [##########]  100% slept 3.0 of 3 s",
                  "job 00000000-0000-4000-8000-000000000000"]
    assert mismatch(documented, shown) is None
    assert mismatch(["   0.0 s  FAILED  created", *documented[1:]], shown) is not None
    assert mismatch([*documented[:2], "job …"], shown) is None
    assert mismatch(documented[:2], shown) == "3 lines shown, 2 documented"
    assert mismatch([*documented[:2], "job 01a24f86 of 4 s"], shown) is not None


@pytest.mark.parametrize("path", [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_every_console_block_is_a_session_of_commands(path: Path) -> None:
    for block in console_blocks(path):
        assert block and all(step.command for step in block), path


def test_every_public_part_of_the_client_has_a_docstring() -> None:
    """docs/client-reference.md is generated from jobs_client's docstrings, and mkdocstrings
    leaves out a class, function or method that has none: so a new one without a docstring
    would be missing from the reference without a word."""
    import jobs_client

    missing = []
    for name in jobs_client.__all__:
        obj = getattr(jobs_client, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue  # TokenSource: a type alias, shown with its definition
        if not inspect.getdoc(obj):
            missing.append(name)
        if inspect.isclass(obj):
            for member, value in vars(obj).items():
                shown = not member.startswith("_") and (
                    callable(value) or isinstance(value, property))
                if shown and not (value.__doc__ or "").strip():
                    missing.append(f"{name}.{member}")
    assert not missing, f"no docstring, so not in the client's reference: {missing}"


def docs_build(tmp_path: Path, change: Callable[[Path], None]) -> subprocess.CompletedProcess[str]:
    """`make docs`'s own command (from the Makefile), run on a copy of the site and the client
    with `change` made to the copy."""
    recipe = re.search(r"^docs:.*\n\t(.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert recipe, "the Makefile has no docs recipe"
    command = recipe.group(1).replace("$(BIN)/", f"{Path(sys.executable).parent}/").split()
    shutil.copy(ROOT / "mkdocs.yml", tmp_path)
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copytree(ROOT / "client" / "jobs_client", tmp_path / "client" / "jobs_client",
                    ignore=shutil.ignore_patterns("__pycache__"))
    change(tmp_path)
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path.name} no longer has {old!r}"
    path.write_text(text.replace(old, new, 1))


def test_the_docs_build_passes_on_an_unchanged_copy(tmp_path: Path) -> None:
    """The baseline for the two below: the copy itself builds, so their failures are theirs."""
    built = docs_build(tmp_path, lambda root: None)
    assert built.returncode == 0, built.stdout + built.stderr


def test_a_broken_cross_reference_in_a_client_docstring_fails_the_docs_build(
        tmp_path: Path) -> None:
    def misname(root: Path) -> None:
        edit(root / "client/jobs_client/client.py", '"""Poll until the job ends',
             '"""Poll (see [JobView][jobs_client.models.NoSuchView]) until the job ends')

    built = docs_build(tmp_path, misname)
    assert built.returncode != 0
    assert "jobs_client.models.NoSuchView" in built.stderr


def test_a_client_symbol_the_reference_names_that_is_gone_fails_the_docs_build(
        tmp_path: Path) -> None:
    """The page's `::: jobs_client.JobsClient` and its cross-reference to JobsClient.wait."""
    def rename(root: Path) -> None:
        edit(root / "client/jobs_client/client.py", "    def wait(", "    def await_end(")

    built = docs_build(tmp_path, rename)
    assert built.returncode != 0
    assert "jobs_client.JobsClient.wait" in built.stderr
