"""The gRPC server of a front-end process: `grpc.aio` on the process's own event loop, beside
uvicorn's HTTP, over the same data plane.

It serves `inference.GRPCInferenceService` (`service.grpc.servicer`), the standard health
service `grpc.health.v1.Health` (SERVING while the data plane is ready, for Kubernetes' gRPC
probes) and server reflection (for grpcurl). With several front-end processes each binds the
port with SO_REUSEPORT (gRPC's default on Linux), and the kernel spreads connections across them,
as it does for HTTP.

Its limits are settings: a message over RNN_SERVE_MAX_BODY_BYTES is RESOURCE_EXHAUSTED (gRPC's
own check, before any parsing), at most RNN_SERVE_GRPC_MAX_CONCURRENT_RPCS calls at once (the
next is RESOURCE_EXHAUSTED) and RNN_SERVE_GRPC_STREAM_MAX_IN_FLIGHT requests in flight a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import grpc
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from service.codecs import messages
from service.core.metrics import Metrics
from service.core.settings import Settings
from service.dataplane.keys import Keys
from service.dataplane.plane import DataPlane
from service.grpc.calls import Calls
from service.grpc.servicer import Servicer

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

log = logging.getLogger("rnn_serve")
HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


def _describe_in_pool() -> None:
    """The health and reflection services' files in the pool reflection describes (the
    Triton service's are there already), so that grpcurl can list and call all three."""
    for module in (health_pb2, reflection_pb2):
        try:
            messages.POOL.FindFileByName(module.DESCRIPTOR.name)
        except KeyError:
            proto = descriptor_pb2.FileDescriptorProto()
            module.DESCRIPTOR.CopyToProto(proto)
            messages.POOL.Add(proto)


class GrpcFrontEnd:
    def __init__(
        self,
        settings: Settings,
        plane: DataPlane,
        keys: Keys,
        metrics: Metrics,
        tracer: Tracer | None = None,
    ) -> None:
        self.settings = settings
        self.plane = plane
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", settings.max_body_bytes),
                ("grpc.max_send_message_length", -1),  # answers are bounded by the tensor limits
                ("grpc.max_concurrent_streams", settings.grpc_max_concurrent_streams),
                ("grpc.so_reuseport", 1),
                # clients' keepalive pings (tritonclient's keepalive options) are welcome
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 5000),
            ],
            maximum_concurrent_rpcs=settings.grpc_max_concurrent_rpcs,
        )
        calls = Calls(keys, metrics, tracer)
        self.server.add_generic_rpc_handlers(
            (Servicer(plane, calls, settings.grpc_stream_max_in_flight).handler(),)
        )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        _describe_in_pool()
        names = (messages.SERVICE, HEALTH, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, self.server, pool=messages.POOL)
        self._following: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self) -> int:
        """Listen on RNN_SERVE_GRPC_PORT (at the HTTP host); the port bound is returned."""
        host, port = self.settings.host, self.settings.grpc_port
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            self.port = self.server.add_insecure_port(address)
        except RuntimeError as exc:
            raise SystemExit(f"rnn-serve: cannot listen for gRPC on {address}: {exc}") from None
        await self.server.start()
        self._following = asyncio.create_task(self._follow_readiness())
        return self.port

    async def _follow_readiness(self) -> None:
        serving = None
        while True:
            ready = self.plane.readiness.ready
            if ready != serving:
                status = (
                    health_pb2.HealthCheckResponse.SERVING
                    if ready
                    else health_pb2.HealthCheckResponse.NOT_SERVING
                )
                for name in ("", messages.SERVICE):
                    await self.health.set(name, status)
                serving = ready
            await asyncio.sleep(0.25)

    async def stop(self, grace_s: float) -> None:
        """Stop taking calls; calls in flight get `grace_s` to finish, then are cancelled."""
        if self._following is not None:
            self._following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._following
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
