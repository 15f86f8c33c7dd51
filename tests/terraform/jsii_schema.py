"""A Terraform provider schema (the shape `terraform providers schema -json` prints) rebuilt from
the jsii manifest of a prebuilt CDK for Terraform provider package (@cdktf/provider-google,
@cdktf/provider-time). HashiCorp generates those packages from the provider's own schema, so the
manifest carries every resource, data source and provider argument with its type, whether it is
required, and which arguments are nested blocks; tests/terraform/provider_plugin.py serves the
result to `terraform validate` as a provider plugin, offline (tests/test_terraform_validate.py).

How the manifest maps back:
- a class whose summary is "Represents a {@link .../docs/resources/X X}" is resource X (data
  source for .../docs/data-sources/..., the provider itself for .../docs NAME);
- its `...Config` struct lists the arguments: the registry anchor in each one's docs is the
  Terraform name; an optional property is optional, any other required; a property documented as
  "NAME block." is a nested block (a struct: at most one; an array of structs: a list);
- getters of the class (and of a block's `...OutputReference`) that are not arguments are the
  computed attributes (`uri`, `email`, ...).
Lists and sets are both written as lists, and computed attributes of complex types as dynamic:
validate then accepts `x[0]` on a set and any path into such an attribute, and nothing else."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

Json = dict[str, Any]

_LINK = re.compile(r"\{@link (\S+) (\S+)\}")
_ANCHOR = re.compile(r"#([a-z0-9_]+) \w+#[a-z0-9_]+\}")
_META = {"connection", "count", "dependsOn", "forEach", "lifecycle", "provider", "provisioners"}
_CDKTF_MAPS = {"cdktf.StringMap": ["map", "string"], "cdktf.NumberMap": ["map", "number"],
               "cdktf.BooleanMap": ["map", "bool"], "cdktf.AnyMap": ["map", "dynamic"]}


def snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


class Manifest:
    def __init__(self, path: Path) -> None:
        self.types: dict[str, Json] = json.loads(path.read_text())["types"]

    def props(self, fqn: str) -> list[Json]:
        found = self.types.get(fqn)
        return [] if found is None else list(found.get("properties", []))

    def is_struct(self, fqn: str) -> bool:
        found = self.types.get(fqn)
        return bool(found and found.get("datatype"))

    # -- types ----------------------------------------------------------------------------------

    def cty(self, jtype: Json) -> Any:
        """The Terraform type of a jsii type; complex computed values become dynamic."""
        if "primitive" in jtype:
            return {"string": "string", "number": "number", "boolean": "bool"}.get(
                jtype["primitive"], "dynamic")
        if "collection" in jtype:
            kind = "list" if jtype["collection"]["kind"] == "array" else "map"
            return [kind, self.cty(jtype["collection"]["elementtype"])]
        if "union" in jtype:
            others = [t for t in jtype["union"]["types"] if t.get("fqn") != "cdktf.IResolvable"]
            return self.cty(others[0]) if len(others) == 1 else "dynamic"
        fqn = jtype.get("fqn", "")
        if fqn in _CDKTF_MAPS:
            return _CDKTF_MAPS[fqn]
        if self.is_struct(fqn):  # an attribute of object type (not a block)
            return ["object", {self.arg_name(p): self.cty(p["type"]) for p in self.props(fqn)}]
        return "dynamic"

    @staticmethod
    def arg_name(prop: Json) -> str:
        docs = prop.get("docs", {})
        found = _ANCHOR.search(docs.get("summary", "") + " " + docs.get("remarks", ""))
        return found.group(1) if found else snake(str(prop["name"]))

    @staticmethod
    def _struct_of(jtype: Json) -> tuple[str, bool] | None:
        """(struct fqn, is a list) when the type is a nested block's."""
        if "fqn" in jtype:
            return str(jtype["fqn"]), False
        for option in jtype.get("union", {}).get("types", []):
            inner = option.get("collection", {})
            if inner.get("kind") == "array" and "fqn" in inner.get("elementtype", {}):
                return str(inner["elementtype"]["fqn"]), True
        return None

    # -- blocks ---------------------------------------------------------------------------------

    def block(self, config_fqn: str, getters_fqn: str | None, skip: set[str]) -> Json:
        attributes: Json = {}
        blocks: Json = {}
        for prop in self.props(config_fqn):
            if prop["name"] in skip:
                continue
            name = self.arg_name(prop)
            summary = prop.get("docs", {}).get("summary", "")
            struct = self._struct_of(prop["type"])
            if summary.startswith(f"{name} block.") and struct and self.is_struct(struct[0]):
                fqn, is_list = struct
                nested: Json = {
                    "nesting_mode": "list",
                    "block": self.block(fqn, f"{fqn}OutputReference", set()),
                }
                if not is_list:
                    nested["max_items"] = 1
                if not prop.get("optional"):
                    nested["min_items"] = 1
                blocks[name] = nested
                continue
            attribute: Json = {"type": self.cty(prop["type"])}
            attribute["optional" if prop.get("optional") else "required"] = True
            attributes[name] = attribute
        for prop in self.props(getters_fqn or ""):
            getter = str(prop["name"])
            if prop.get("static") or getter.endswith("Input") or getter in {
                    "internalValue", "tfResourceType", "fqn", "creationStack"}:
                continue
            # cdktf renames a getter that clashes with its own API (`build` -> buildAttribute).
            names = {snake(getter), snake(getter.removesuffix("Attribute"))}
            for name in names - set(attributes) - set(blocks):
                attributes[name] = {"type": self.cty(prop["type"]), "computed": True}
        return {"attributes": attributes, "block_types": blocks}


def provider_schema(manifest_path: Path) -> Json:
    """{"provider": ..., "resource_schemas": ..., "data_source_schemas": ...} of one package."""
    manifest = Manifest(manifest_path)
    out: Json = {"provider": None, "resource_schemas": {}, "data_source_schemas": {}}
    for fqn, jtype in manifest.types.items():
        if jtype.get("kind") != "class" or not fqn.startswith("@cdktf/provider-"):
            continue
        link = _LINK.search(jtype.get("docs", {}).get("summary", ""))
        if not jtype.get("docs", {}).get("summary", "").startswith("Represents a") or not link:
            continue
        url, tf_name = link.groups()
        config = f"{fqn}Config"
        if config not in manifest.types:
            continue
        if url.endswith("/docs"):
            out["provider"] = {"block": manifest.block(config, None, {"alias"})}
            continue
        schema = {"block": manifest.block(config, fqn, _META)}
        schema["block"]["attributes"].setdefault("id", {"type": "string", "optional": True,
                                                        "computed": True})
        kind = "data_source_schemas" if "/docs/data-sources/" in url else "resource_schemas"
        out[kind][tf_name] = schema
    if out["provider"] is None:
        raise ValueError(f"{manifest_path}: no provider class found")
    return out


if __name__ == "__main__":  # python jsii_schema.py MANIFEST OUT.json
    Path(sys.argv[2]).write_text(json.dumps(provider_schema(Path(sys.argv[1]))))
