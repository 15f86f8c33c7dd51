"""What a function's code can reach, read statically: the project modules its entry module imports
(at the top or inside a function, transitively) and the settings those modules read. Used to
derive from the code, not from a hand list, which topics each function publishes to and which
secrets it reads (tests/test_deploy_grants.py)."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

from localstack.paths import ROOT

PACKAGES = ("common", "functions")


def _path(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


@cache
def _tree(module: str) -> ast.Module:
    path = _path(module)
    assert path is not None, module
    return ast.parse(path.read_text())


def _imports(module: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(_tree(module)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {m for m in found if m.split(".")[0] in PACKAGES and _path(m) is not None}


def closure(module: str) -> set[str]:
    """`module` and every project module it may import, lazily or not."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(_imports(current) - seen)
    return seen


def settings_read(module: str, names: set[str]) -> dict[str, set[str]]:
    """Which of the settings `names` the code reachable from `module` reads (`x.<name>`), each
    with the modules that read it; common.settings itself (which declares them) is left out."""
    found: dict[str, set[str]] = {}
    for reached in closure(module) - {"common.settings"}:
        for node in ast.walk(_tree(reached)):
            if isinstance(node, ast.Attribute) and node.attr in names:
                found.setdefault(node.attr, set()).add(reached)
    return found
