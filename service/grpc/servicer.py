"""Triton's `inference.GRPCInferenceService`: each RPC a thin adapter over the data plane, as the
HTTP routes of `service.http.v2` are, with the same answers in the protocol's messages.

Served: ServerLive, ServerReady, ServerMetadata, ModelReady, ModelMetadata, ModelConfig,
ModelStatistics, RepositoryIndex, RepositoryModelLoad/Unload, ModelInfer and ModelStreamInfer
(`service.grpc.stream`). The shared-memory, trace and log RPCs are not registered, so gRPC
answers them UNIMPLEMENTED. Requests and answers travel as bytes: each handler parses its
request (a malformed one is INVALID_ARGUMENT) and an infer's answer is the codec's serialized
message, with no second encoding.
"""

from __future__ import annotations

from typing import Any

import grpc

from service import __version__
from service.codecs import messages as m
from service.codecs.oip import (
    EXTENSIONS,
    STATS_FAMILIES,
    check_version,
    index_entries,
    metadata,
    model_config,
    statistics,
)
from service.codecs.oip_grpc import GrpcInfer
from service.dataplane.context import RequestContext
from service.dataplane.keys import ADMIN, INFERENCE
from service.dataplane.plane import DataPlane
from service.grpc.calls import Calls
from service.grpc.stream import Streams


class Servicer:
    def __init__(self, plane: DataPlane, calls: Calls, max_in_flight: int) -> None:
        self.plane = plane
        self.calls = calls
        self.streams = Streams(plane, calls, max_in_flight)

    def handler(self) -> grpc.GenericRpcHandler:
        unary = self.calls.unary

        def rpc(method: str, request: str, scope: str | None, serve: Any) -> Any:
            call = unary(method, m.message(request), scope, serve)
            return grpc.unary_unary_rpc_method_handler(call)

        handlers = {
            "ServerLive": rpc("ServerLive", "ServerLiveRequest", None, self.server_live),
            "ServerReady": rpc("ServerReady", "ServerReadyRequest", None, self.server_ready),
            "ServerMetadata": rpc(
                "ServerMetadata", "ServerMetadataRequest", None, self.server_metadata
            ),
            "ModelReady": rpc("ModelReady", "ModelReadyRequest", INFERENCE, self.model_ready),
            "ModelMetadata": rpc(
                "ModelMetadata", "ModelMetadataRequest", INFERENCE, self.model_metadata
            ),
            "ModelConfig": rpc("ModelConfig", "ModelConfigRequest", INFERENCE, self.model_config),
            "ModelStatistics": rpc(
                "ModelStatistics", "ModelStatisticsRequest", INFERENCE, self.model_statistics
            ),
            "RepositoryIndex": rpc(
                "RepositoryIndex", "RepositoryIndexRequest", INFERENCE, self.repository_index
            ),
            "RepositoryModelLoad": rpc(
                "RepositoryModelLoad", "RepositoryModelLoadRequest", ADMIN, self.load
            ),
            "RepositoryModelUnload": rpc(
                "RepositoryModelUnload", "RepositoryModelUnloadRequest", ADMIN, self.unload
            ),
            "ModelInfer": rpc("ModelInfer", "ModelInferRequest", INFERENCE, self.model_infer),
            "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(self.streams.serve),
        }
        return grpc.method_handlers_generic_handler(m.SERVICE, handlers)

    # --- health and metadata --------------------------------------------------------------------
    async def server_live(self, ctx: RequestContext, req: Any) -> bytes:
        return bytes(m.message("ServerLiveResponse")(live=True).SerializeToString())

    async def server_ready(self, ctx: RequestContext, req: Any) -> bytes:
        ready = self.plane.readiness.ready
        return bytes(m.message("ServerReadyResponse")(ready=ready).SerializeToString())

    async def server_metadata(self, ctx: RequestContext, req: Any) -> bytes:
        answer = m.message("ServerMetadataResponse")(
            name="rnn-serve", version=__version__, extensions=EXTENSIONS
        )
        return bytes(answer.SerializeToString())

    async def model_ready(self, ctx: RequestContext, req: Any) -> bytes:
        check_version(req.name, req.version)
        await self.plane.repository.model(req.name)  # 404 unless registered
        return bytes(m.message("ModelReadyResponse")(ready=True).SerializeToString())

    async def model_metadata(self, ctx: RequestContext, req: Any) -> bytes:
        check_version(req.name, req.version)
        spec = await self.plane.repository.model(req.name)
        meta = metadata(spec).model_dump(mode="json")
        return bytes(m.from_dict("ModelMetadataResponse", meta).SerializeToString())

    async def model_config(self, ctx: RequestContext, req: Any) -> bytes:
        check_version(req.name, req.version)
        repository = self.plane.repository
        spec = await repository.model(req.name)
        config = model_config(spec, repository.max_batch_sequences)
        # Triton's message has one scheduling choice (a oneof), where the JSON lists both: the
        # sequence batcher's is kept, since these are sequence models
        del config["dynamic_batching"]
        # (outputs' "optional" is the JSON form's only)
        answer = m.from_dict("ModelConfigResponse", {"config": config}, lenient=True)
        return bytes(answer.SerializeToString())

    async def model_statistics(self, ctx: RequestContext, req: Any) -> bytes:
        repository = self.plane.repository
        if req.name:
            check_version(req.name, req.version)
            names = [(await repository.model(req.name)).name]
        else:
            names = await repository.names()
        collected = await repository.samples(*STATS_FAMILIES)
        answer = m.from_dict("ModelStatisticsResponse", statistics(collected, names))
        return bytes(answer.SerializeToString())

    # --- the model repository extension ------------------------------------------------------
    async def repository_index(self, ctx: RequestContext, req: Any) -> bytes:
        entries = index_entries(await self.plane.repository.index())
        if req.ready:
            entries = [e for e in entries if e["state"] == "READY"]
        answer = m.from_dict("RepositoryIndexResponse", {"models": entries})
        return bytes(answer.SerializeToString())

    async def load(self, ctx: RequestContext, req: Any) -> bytes:
        await self.plane.repository.load(req.model_name)
        return bytes(m.message("RepositoryModelLoadResponse")().SerializeToString())

    async def unload(self, ctx: RequestContext, req: Any) -> bytes:
        await self.plane.repository.unload(req.model_name)
        return bytes(m.message("RepositoryModelUnloadResponse")().SerializeToString())

    # --- inference ---------------------------------------------------------------------------
    async def model_infer(self, ctx: RequestContext, req: Any) -> bytes:
        check_version(req.model_name, req.model_version)
        encoded = await self.plane.infer(ctx, GrpcInfer(req), req.model_name)
        return encoded.body
