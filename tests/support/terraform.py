"""infra/*.tf read with python-hcl2 into plain dicts. Version 8 keeps the quotes around labels
and string values and adds `__is_block__` / `__comments__` keys: those are normalised away."""

from __future__ import annotations

import json
import os
import subprocess
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


# -- a real `terraform validate`, offline ----------------------------------------------------------

SCHEMAS = ROOT / "tests" / "terraform"
PROVIDERS = {"google": "provider-google", "time": "provider-time"}  # hashicorp/NAME: npm package


def _schema_file(provider: str) -> Path:
    """The provider's schema as JSON, rebuilt from its @cdktf package once per package version."""
    package = SCHEMAS / "node_modules" / "@cdktf" / PROVIDERS[provider]
    if not (package / ".jsii").exists():
        raise AssertionError(f"{package} is missing: run `make install` (tests/terraform)")
    version = json.loads((package / "package.json").read_text())["version"]
    cached = SCHEMAS / ".schema" / f"{provider}-{version}.json"
    if not cached.exists():
        from tests.terraform.jsii_schema import provider_schema

        cached.parent.mkdir(exist_ok=True)
        partial = cached.with_suffix(".partial")
        partial.write_text(json.dumps(provider_schema(package / ".jsii")))
        partial.replace(cached)  # a concurrent run never reads half a file
    return cached


def validate(directory: Path, workdir: Path) -> subprocess.CompletedProcess[str]:
    """`terraform validate` on `directory` with every provider it names served from its schema
    by tests/terraform/provider_plugin.py, through dev overrides in a CLI config file: no
    registry, no `terraform init`, no credentials. `workdir` holds the plugins and the config."""
    python = SCHEMAS / ".venv" / "bin" / "python"
    if not python.exists():
        raise AssertionError(f"{python} is missing: run `make install` (tests/terraform)")
    plugins = workdir / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    overrides = []
    for provider in PROVIDERS:
        plugin = plugins / f"terraform-provider-{provider}"
        plugin.write_text(f"#!/bin/sh\nexec '{python}' '{SCHEMAS / 'provider_plugin.py'}' "
                          f"'{_schema_file(provider)}'\n")
        plugin.chmod(0o755)
        overrides.append(f'    "hashicorp/{provider}" = "{plugins}"')
    config = workdir / "terraform.tfrc"
    config.write_text("provider_installation {\n  dev_overrides {\n" + "\n".join(overrides)
                      + "\n  }\n  direct {}\n}\n")
    env = {**os.environ, "TF_CLI_CONFIG_FILE": str(config), "TF_IN_AUTOMATION": "1",
           "CHECKPOINT_DISABLE": "1", "TF_DATA_DIR": str(workdir / ".terraform")}
    return subprocess.run(["terraform", "validate", "-no-color"], cwd=directory, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
