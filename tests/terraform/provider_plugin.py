"""A Terraform provider plugin that knows only its schema: it answers `terraform validate` with
the schema tests/terraform/jsii_schema.py rebuilt from a @cdktf provider package, and has no
resources to create. It runs in its own virtualenv (tests/terraform/.venv, from
tests/terraform/requirements.txt: the PyPI package tfprovider, whose pins clash with ours), started
by Terraform through a dev override in a CLI config file (tests/support/terraform.py).

    provider_plugin.py SCHEMA.json

tfprovider's level-1 server does the go-plugin handshake (TLS, the port line on stdout, the
health and controller services); this module is the tfplugin6 Provider service on top of it.
Validation of values (ValidateResourceConfig and the like) answers with no diagnostics: what
Terraform checks against the schema itself (argument names, required arguments, blocks, types of
constants, references to attributes) is what this gives."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tfplugin_proto import tfplugin6_4_pb2 as pb
from tfplugin_proto import tfplugin6_4_pb2_grpc as pb_grpc
from tfprovider.level1.rpc_plugin import SyncRPCPluginServer

Json = dict[str, Any]


def block(spec: Json) -> pb.Schema.Block:
    attributes = [
        pb.Schema.Attribute(
            name=name,
            type=json.dumps(attr["type"]).encode(),
            required=bool(attr.get("required")),
            optional=bool(attr.get("optional")),
            computed=bool(attr.get("computed")),
        )
        for name, attr in sorted(spec.get("attributes", {}).items())
    ]
    nested = [
        pb.Schema.NestedBlock(
            type_name=name,
            block=block(sub["block"]),
            nesting=pb.Schema.NestedBlock.LIST,
            min_items=sub.get("min_items", 0),
            max_items=sub.get("max_items", 0),
        )
        for name, sub in sorted(spec.get("block_types", {}).items())
    ]
    return pb.Schema.Block(attributes=attributes, block_types=nested)


def schema(spec: Json) -> pb.Schema:
    return pb.Schema(block=block(spec["block"]))


class SchemaOnlyProvider(pb_grpc.ProviderServicer):  # type: ignore[misc]
    def __init__(self, spec: Json) -> None:
        self.response = pb.GetProviderSchema.Response(
            provider=schema(spec["provider"]),
            resource_schemas={k: schema(v) for k, v in spec["resource_schemas"].items()},
            data_source_schemas={k: schema(v) for k, v in spec["data_source_schemas"].items()},
        )

    def GetMetadata(self, request: Any, context: Any) -> Any:
        return pb.GetMetadata.Response(
            server_capabilities=pb.ServerCapabilities(get_provider_schema_optional=False),
            resources=[pb.GetMetadata.ResourceMetadata(type_name=k)
                       for k in self.response.resource_schemas],
            data_sources=[pb.GetMetadata.DataSourceMetadata(type_name=k)
                          for k in self.response.data_source_schemas],
        )

    def GetProviderSchema(self, request: Any, context: Any) -> Any:
        return self.response

    def ValidateProviderConfig(self, request: Any, context: Any) -> Any:
        return pb.ValidateProviderConfig.Response()

    def ValidateResourceConfig(self, request: Any, context: Any) -> Any:
        return pb.ValidateResourceConfig.Response()

    def ValidateDataResourceConfig(self, request: Any, context: Any) -> Any:
        return pb.ValidateDataResourceConfig.Response()

    def StopProvider(self, request: Any, context: Any) -> Any:
        return pb.StopProvider.Response()


if __name__ == "__main__":
    spec = json.loads(Path(sys.argv[1]).read_text())
    server = SyncRPCPluginServer(SchemaOnlyProvider(spec))
    # go-plugin decodes the handshake's certificate with base64.RawStdEncoding (no padding),
    # while the server library pads it: a certificate whose DER length is not a multiple of 3
    # (now and then, with a random serial number) failed the handshake with "error parsing
    # server cert: illegal base64 data" (seen once in CI). Unpadded, every length is read.
    server.cert_base64 = server.cert_base64.rstrip("=")
    server.run()
