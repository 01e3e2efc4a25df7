"""Triton's gRPC messages (`inference.*`), from the vendored protocol files' descriptor set.

The descriptors go into a pool of rnn-serve's own, not protobuf's default pool:
`tritonclient.grpc`'s generated modules register the same `inference` package in the default
pool, and a second registration in one process clashes (kserve #3099). Messages are built by
protobuf's message factory from that pool, so no generated `_pb2` module is kept either; the wire
format is the protocol's, whatever pool it was built from. `make protos` compiles the `.proto`
files in `protos/` to `protos/triton.binpb`.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

PACKAGE = "inference"
SERVICE = f"{PACKAGE}.GRPCInferenceService"

POOL = descriptor_pool.DescriptorPool()


def _load() -> None:
    data = resources.files("service.codecs").joinpath("protos/triton.binpb").read_bytes()
    for file in descriptor_pb2.FileDescriptorSet.FromString(data).file:
        POOL.Add(file)


_load()


def message(name: str) -> Any:
    """The message class `inference.<name>` (nested names with dots)."""
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(f"{PACKAGE}.{name}"))


def from_dict(name: str, value: dict[str, Any], *, lenient: bool = False) -> Any:
    """A message from its JSON form (protobuf's mapping), as the HTTP twin answers it;
    `lenient`: members the message has no field for are left out."""
    return json_format.ParseDict(
        value, message(name)(), ignore_unknown_fields=lenient, descriptor_pool=POOL
    )


ModelInferRequest = message("ModelInferRequest")
ModelInferResponse = message("ModelInferResponse")
ModelStreamInferResponse = message("ModelStreamInferResponse")
InferParameter = message("InferParameter")
