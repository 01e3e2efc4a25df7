"""What every gRPC call goes through, once: its request context (id, caller, deadline), its
message parsed, its domain errors as statuses, its metrics and access-log line.

The decisions are the data plane's, as for HTTP: the caller is `Keys.check`'s (metadata
`authorization: Bearer <key>`, or `x-api-key: <key>`), the request id is `RequestIds.take`'s
(metadata `x-request-id`, echoed in the trailing metadata), the deadline is the call's own gRPC
deadline, capped by the data plane as X-Request-Timeout is. Only the carrier differs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError

from service.core.errors import InvalidInput, ServiceError, Unauthorized, described
from service.core.logs import ACCESS
from service.core.metrics import Metrics
from service.core.tracing import CallSpan
from service.dataplane.context import ANONYMOUS, Caller, LogFields, RequestContext, RequestIds
from service.dataplane.keys import Keys
from service.grpc.status import status_of

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

log = logging.getLogger("rnn_serve.errors")

Metadata = dict[str, str]
INTERNAL = "internal server error; the server log has the details"


def metadata_of(context: grpc.aio.ServicerContext[Any, Any]) -> Metadata:
    """The call's metadata, one value a key (text values; binary `-bin` ones are left out)."""
    out: Metadata = {}
    for key, value in context.invocation_metadata() or ():
        if isinstance(value, str):
            out.setdefault(key, value)
    return out


def parse(cls: Any, data: bytes, what: str) -> Any:
    """A request message from its bytes: INVALID_ARGUMENT, not INTERNAL, when they are not one."""
    try:
        return cls.FromString(data)
    except DecodeError:
        raise InvalidInput.at((what,), f"expected a {what} message") from None


def end_span(span: CallSpan | None, status: grpc.StatusCode) -> None:
    if span is not None:
        span.end(status.value[0], status in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN))


class Calls:
    """The per-call work every RPC shares."""

    def __init__(self, keys: Keys, metrics: Metrics, tracer: Tracer | None = None) -> None:
        self.keys = keys if keys.enabled else None
        self.tracer = tracer  # OpenTelemetry's, when tracing is on
        self.ids = RequestIds()
        self._metrics = metrics

    def caller(self, metadata: Metadata, scope: str | None) -> Caller:
        """Who calls (`Keys.check`), for a call that needs `scope`; anyone where none is needed
        or the server has no keys."""
        if scope is None or self.keys is None:
            return ANONYMOUS
        authorization = metadata.get("authorization")
        if authorization is None and "x-api-key" in metadata:
            authorization = f"Bearer {metadata['x-api-key']}"
        if authorization is None:
            raise Unauthorized(
                "this server needs an API key: send metadata authorization: Bearer <key>"
            )
        return self.keys.check(authorization, scope)

    def context(
        self,
        call: grpc.aio.ServicerContext[Any, Any],
        metadata: Metadata,
        caller: Caller,
        offered_id: str | None = None,
    ) -> RequestContext:
        """The request's context: its id (the request's own `id`, else metadata x-request-id,
        else a new one), the caller, and what is left of the call's deadline."""
        rid = self.ids.take(offered_id or metadata.get("x-request-id"))
        return RequestContext(rid, "grpc", caller, call.time_remaining(), {})

    def span(self, method: str, ctx: RequestContext, metadata: Metadata) -> CallSpan | None:
        """The call's trace span, when tracing is on (end it with `end_span`)."""
        if self.tracer is None:
            return None
        return CallSpan(self.tracer, method, ctx.request_id, metadata)

    def record(
        self, route: str, status: grpc.StatusCode, start: float, rid: str, fields: Any
    ) -> None:
        """A call's (or a stream request's) count, latency and access-log line."""
        elapsed = time.perf_counter() - start
        self._metrics.request_done("grpc", "POST", route, status.name, elapsed)
        if ACCESS.enabled():
            ACCESS.write({
                "request_id": rid, "protocol": "grpc", "method": "POST", "path": route,
                "status": status.name, "duration_ms": round(elapsed * 1e3, 3), **fields,
            })  # fmt: skip

    def unary(
        self,
        method: str,
        request: Any,
        scope: str | None,
        serve: Callable[[RequestContext, Any], Awaitable[bytes]],
    ) -> Callable[[bytes, grpc.aio.ServicerContext[Any, Any]], Awaitable[bytes]]:
        """A unary RPC: `serve(ctx, message)` gives the answer's bytes; a domain error ends the
        call with its status and message (`service.grpc.status`), anything else with INTERNAL
        and an opaque message (the log has the traceback)."""
        route = f"/inference.GRPCInferenceService/{method}"
        what = request.DESCRIPTOR.name

        async def call(data: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            start = time.perf_counter()
            rid: str = "-"
            fields: LogFields = {}
            status, message = grpc.StatusCode.OK, ""
            span = None
            try:
                metadata = metadata_of(context)
                ctx = self.context(context, metadata, self.caller(metadata, scope))
                rid, fields = ctx.request_id, ctx.log
                span = self.span(method, ctx, metadata)
                context.set_trailing_metadata((("x-request-id", rid),))
                return await serve(ctx, parse(request, data, what))
            except ServiceError as exc:
                status, message = status_of(exc), described(exc)
                retry_after = getattr(exc, "retry_after", None)
                if retry_after:
                    context.set_trailing_metadata(
                        (("x-request-id", rid), ("retry-after", str(max(1, round(retry_after)))))
                    )
            except asyncio.CancelledError:
                status = grpc.StatusCode.CANCELLED  # the client left, or its deadline passed
                raise
            except Exception:
                log.exception("unhandled error on gRPC %s (request id %s)", method, rid)
                status, message = grpc.StatusCode.INTERNAL, INTERNAL
            finally:
                self.record(route, status, start, rid, fields)
                end_span(span, status)
            await context.abort(status, message)
            raise AssertionError("abort returns by raising")  # (for the type checker)

        return call
