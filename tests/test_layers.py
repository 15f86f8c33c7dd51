"""The import layers of `common/` and `functions/`, read from the source (AST), not by importing.

Each package may import only the packages its docstring names (see common/__init__.py). A
forbidden import fails here with the file, the line and the rule it breaks.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP = {"common.settings", "common.logs", "common.lazy"}

# package -> the `common` packages (besides itself) it may import from
ALLOWED: dict[str, set[str]] = {
    "common": set(),
    "common.settings": set(),
    "common.logs": set(),
    "common.lazy": set(),
    "common.store": TOP,
    "common.presets": TOP,
    "common.messaging": TOP | {"common.store"},
    "common.service": TOP | {"common.store", "common.messaging"},
    "common.worker": TOP | {"common.store", "common.presets", "common.messaging"},
    "common.maintenance": TOP | {"common.store", "common.messaging", "common.service"},
    "common.api": TOP
    | {"common.store", "common.presets", "common.messaging", "common.service",
       "common.maintenance"},
}
# `functions/` are adapters: they wire `common` to functions-framework and hold no logic, so
# they never talk to the database driver, SQL or Pub/Sub directly.
ADAPTER_FORBIDDEN = ("sqlalchemy", "pg8000", "google.cloud", "alembic")
MAX_MODULE_LINES = 400


def _unit(module: str) -> str:
    """The layer a `common.…` module belongs to: its package, or itself at the top level."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            # `from common import x` imports the module common.x
            if node.module == "common":
                found += [(node.lineno, f"common.{alias.name}") for alias in node.names]
    return found


def layer_violations(root: Path = ROOT) -> list[str]:
    problems: list[str] = []
    for path in sorted((root / "common").rglob("*.py")):
        here = _unit(_module_name(path, root))
        allowed = ALLOWED.get(here)
        if allowed is None:
            problems.append(f"{path.relative_to(root)}: {here} is in no layer of ALLOWED")
            continue
        for line, name in _imports(path):
            if not name.startswith("common."):
                continue
            there = _unit(name)
            if there != here and there not in allowed:
                problems.append(
                    f"{path.relative_to(root)}:{line}: {here} may not import {name}"
                )
    for path in sorted((root / "functions").rglob("*.py")):
        for line, name in _imports(path):
            if name.startswith(ADAPTER_FORBIDDEN):
                problems.append(
                    f"{path.relative_to(root)}:{line}: functions/ are adapters; "
                    f"{name} belongs in common/"
                )
    return problems


def test_imports_follow_the_layers() -> None:
    assert layer_violations() == []


def test_every_common_package_says_what_it_holds_and_may_import() -> None:
    for init in sorted((ROOT / "common").rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert len(doc) > 80, f"{init.relative_to(ROOT)} needs a docstring"
        if init.parent != ROOT / "common":
            assert "import" in doc, f"{init.relative_to(ROOT)} must say what it may import"


def test_no_module_in_common_is_over_the_size_limit() -> None:
    big = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / "common").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert big == {}


@pytest.mark.parametrize(
    ("where", "line", "expected"),
    [
        ("common/api/extra.py", "from common.worker.runner import Worker\n",
         "common.api may not import common.worker.runner"),
        ("common/store/extra.py", "import common.messaging.pubsub\n",
         "common.store may not import common.messaging.pubsub"),
        ("common/store/extra.py", "from common import service\n",
         "common.store may not import common.service"),
        ("functions/extra.py", "from sqlalchemy import text\n",
         "functions/ are adapters; sqlalchemy belongs in common/"),
    ],
)
def test_the_check_catches_a_forbidden_import(
    tmp_path: Path, where: str, line: str, expected: str
) -> None:
    """The checker itself, on a copy of the tree with one forbidden import added."""
    for top in ("common", "functions"):
        for src in (ROOT / top).rglob("*.py"):
            dst = tmp_path / src.relative_to(ROOT)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(src.read_text())
    (tmp_path / where).write_text(line)
    found = layer_violations(tmp_path)
    assert len(found) == 1 and expected in found[0], found
