"""infra/*.tf read with python-hcl2 into plain dicts. Version 8 keeps the quotes around labels
and string values and adds `__is_block__` / `__comments__` keys: those are normalised away."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hcl2

from localstack.paths import ROOT

INFRA = ROOT / "infra"


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {_unquote(k): _clean(v) for k, v in value.items() if not k.startswith("__")}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, str):
        return _unquote(value)
    return value


def _unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def load(path: Path) -> dict[str, Any]:
    with path.open() as fh:
        return _clean(hcl2.load(fh))


class Infra:
    def __init__(self) -> None:
        self.files = {p.name: load(p) for p in sorted(INFRA.glob("*.tf"))}
        self.resources: dict[str, dict[str, dict[str, Any]]] = {}
        self.data: dict[str, dict[str, dict[str, Any]]] = {}
        self.variables: dict[str, dict[str, Any]] = {}
        self.locals: dict[str, Any] = {}
        self.outputs: dict[str, dict[str, Any]] = {}
        for doc in self.files.values():
            for block in doc.get("resource", []):
                for rtype, named in block.items():
                    self.resources.setdefault(rtype, {}).update(named)
            for block in doc.get("data", []):
                for dtype, named in block.items():
                    self.data.setdefault(dtype, {}).update(named)
            for block in doc.get("variable", []):
                self.variables.update(block)
            for block in doc.get("locals", []):
                self.locals.update(block)
            for block in doc.get("output", []):
                self.outputs.update(block)

    def resource(self, rtype: str, name: str) -> dict[str, Any]:
        return self.resources[rtype][name]

    def resource_types(self) -> set[str]:
        return set(self.resources)

    def default(self, variable: str) -> Any:
        return self.variables[variable]["default"]

    def text(self) -> str:
        return "\n".join(p.read_text() for p in sorted(INFRA.glob("*.tf")))


def one_block(block: Any) -> dict[str, Any]:
    """A nested block (a list of one dict, as python-hcl2 gives it) as the dict."""
    assert isinstance(block, list) and len(block) == 1, block
    return block[0]  # type: ignore[no-any-return]
