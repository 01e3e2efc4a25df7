"""Optional OpenTelemetry tracing (off by default: RNN_SERVE_TRACING=true, with the `tracing`
extra installed).

One span per request (`POST /v1/models/{name}/forward`, from the edge, with the route, status and
request id; a caller's W3C `traceparent` is continued), and under a forward four children:
`decode`, `queue`, `compute`, `encode`. Queue and compute happen in the batcher and the engine
(maybe another process): their spans are placed from the durations the engine measured, inside
the time the data plane waited for them.

The exporter is OpenTelemetry's to configure (OTEL_EXPORTER_OTLP_ENDPOINT and friends): an SDK
tracer provider set before the app starts is used as it is; otherwise rnn-serve sets one up with
the OTLP/HTTP exporter when it is installed (the extra installs it).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from service import __version__

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

log = logging.getLogger("rnn_serve")


def tracer_for(enabled: bool) -> Tracer | None:
    if not enabled:
        return None
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise RuntimeError(
            "RNN_SERVE_TRACING=true needs OpenTelemetry's SDK: pip install 'rnn-serve[tracing]'"
        ) from None
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # nobody configured one: set ours up
        provider = TracerProvider(resource=Resource.create({"service.name": "rnn-serve"}))
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
                OTLPSpanExporter,
            )

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        except ImportError:
            log.warning("tracing is on but no exporter is installed: spans are dropped")
        trace.set_tracer_provider(provider)
    return provider.get_tracer("rnn-serve", __version__)


class RequestSpan:
    """The edge's span for one request, made current for everything the request runs."""

    __slots__ = ("_span", "_token")

    def __init__(
        self,
        tracer: Tracer,
        method: str,
        route: str,
        request_id: str,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        from opentelemetry import context, propagate, trace

        # a caller's trace (W3C traceparent) continues here
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers or ()}
        self._span = tracer.start_span(
            f"{method} {route}",
            context=propagate.extract(carrier),
            kind=trace.SpanKind.SERVER,
            attributes={"http.request.method": method, "http.route": route,
                        "rnn_serve.request_id": request_id},
        )  # fmt: skip
        self._token = context.attach(trace.set_span_in_context(self._span))

    def end(self, status: int) -> None:
        from opentelemetry import context
        from opentelemetry.trace import Status, StatusCode

        self._span.set_attribute("http.response.status_code", status)
        if status >= 500:
            self._span.set_status(Status(StatusCode.ERROR))
        context.detach(self._token)
        self._span.end()


class CallSpan:
    """The gRPC front end's span for one call (or one request of a stream), made current for
    everything it runs: the forward's stage spans are its children, as under RequestSpan."""

    __slots__ = ("_span", "_token")

    def __init__(
        self, tracer: Tracer, method: str, request_id: str, metadata: dict[str, str]
    ) -> None:
        from opentelemetry import context, propagate, trace

        service = "inference.GRPCInferenceService"
        self._span = tracer.start_span(
            f"{service}/{method}",
            context=propagate.extract(metadata),  # a caller's traceparent, as gRPC metadata
            kind=trace.SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": method,
                        "rnn_serve.request_id": request_id},
        )  # fmt: skip
        self._token = context.attach(trace.set_span_in_context(self._span))

    def end(self, code: int, failed: bool) -> None:
        """`code`: the gRPC status code's number; `failed`: the server's fault (INTERNAL)."""
        from opentelemetry import context
        from opentelemetry.trace import Status, StatusCode

        self._span.set_attribute("rpc.grpc.status_code", code)
        if failed:
            self._span.set_status(Status(StatusCode.ERROR))
        context.detach(self._token)
        self._span.end()


class ChunkSpan:
    """A WebSocket stream's span for one chunk, made current for what it runs (the forward's
    stage spans are its children); the upgrade request's traceparent is its parent."""

    __slots__ = ("_span", "_token")

    def __init__(
        self, tracer: Tracer, path: str, request_id: str, headers: dict[str, str], number: int
    ) -> None:
        from opentelemetry import context, propagate, trace

        self._span = tracer.start_span(
            f"WS {path}",
            context=propagate.extract(headers),
            kind=trace.SpanKind.SERVER,
            attributes={"rnn_serve.protocol": "websocket", "rnn_serve.request_id": request_id,
                        "rnn_serve.chunk": number},
        )  # fmt: skip
        self._token = context.attach(trace.set_span_in_context(self._span))

    def end(self, status: int) -> None:
        """`status`: the chunk's HTTP-equivalent status (an error message's, or 200)."""
        from opentelemetry import context
        from opentelemetry.trace import Status, StatusCode

        self._span.set_attribute("http.response.status_code", status)
        if status >= 500:
            self._span.set_status(Status(StatusCode.ERROR))
        context.detach(self._token)
        self._span.end()


def forward_spans(
    tracer: Tracer,
    marks: tuple[float, float, float, float, float, float],
    queue_s: float,
    compute_s: float,
    attributes: dict[str, Any],
) -> None:
    """The forward's four stages as child spans of the current (request) span. `marks`:
    perf_counter at decode start and end, backend call start and end, encode start and end."""
    offset = time.time_ns() - time.perf_counter_ns()

    def ns(t: float) -> int:
        return offset + int(t * 1e9)

    decode0, decode1, call0, call1, encode0, encode1 = marks
    queue1 = min(call0 + queue_s, call1)
    compute1 = min(queue1 + compute_s, call1)
    stages = (
        ("decode", decode0, decode1),
        ("queue", call0, queue1),
        ("compute", queue1, compute1),
        ("encode", encode0, encode1),
    )
    for name, start, end in stages:
        span = tracer.start_span(name, start_time=ns(start), attributes=attributes)
        span.end(end_time=ns(end))
