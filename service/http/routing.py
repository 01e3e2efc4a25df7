"""Lean routes: entries of FastAPI's one routing table that skip FastAPI's per-request machinery.

FastAPI's request handling (dependency solving, parameter and body validation, response
serialisation) and the layers around its router are a measurable share of a small request's
cost. The forward routes need none of it: their codecs read the body themselves and they answer
their own errors. A `LeanRoute` is an ordinary `APIRoute` — declared with the same decorators,
documented in the same OpenAPI document (parameters and bodies with `openapi_extra`), labelled
the same in metrics — whose endpoint takes a `LeanRequest` (the scope and the body, already
read) and returns an `Answer`. The edge (`service.http.edge`) serves lean routes itself; should
the router ever run one (it matches the same table), `get_route_handler` adapts it.

Errors are answered in the route's protocol's form: problem+json (`LeanRoute`) or the Open
Inference Protocol's `{"error"}` (`OIPRoute`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Scope

from service.codecs.pipeline import Encoded
from service.core.errors import ClientDisconnected, ServiceError
from service.dataplane.context import ANONYMOUS, RequestContext, parse_timeout
from service.dataplane.plane import DataPlane
from service.http.answer import Answer
from service.http.problems import oip_error_answer, problem_answer, response_of
from service.http.protocol import ARRIVED


class InternalError(ServiceError):
    """An unexpected failure: answered 500 with an opaque body; the log has the traceback."""


class LeanRequest(Request):
    """A lean route's request: the scope, and the body the edge has read."""

    def __init__(self, scope: Scope, body: bytes) -> None:
        super().__init__(scope)
        self._body = body

    @property
    def raw_body(self) -> bytes:
        return self._body

    @property
    def plane(self) -> DataPlane:
        plane: DataPlane = self.scope["state"]["plane"]
        return plane

    def header(self, name: bytes) -> str | None:
        """A request header by its lower-case name (no Headers object built)."""
        for key, value in self.scope["headers"]:
            if key == name:
                return str(value.decode("latin-1"))
        return None

    @property
    def context(self) -> RequestContext:
        """The request as the data plane sees it (`context_of`)."""
        return context_of(self.scope)


def context_of(scope: Scope) -> RequestContext:
    """The request's context, made once from what the edge decided (its id, the caller) and
    the client's own deadline: the X-Request-Timeout header, in seconds (the server's
    RNN_SERVE_REQUEST_TIMEOUT_S caps it). Its `log` is the access log line's extra fields."""
    ctx: RequestContext | None = scope.get("context")
    if ctx is None:
        timeout = None
        for key, value in scope["headers"]:
            if key == b"x-request-timeout":
                timeout = value.decode("latin-1")
                break
        ctx = RequestContext(
            scope.get("request_id", "-"), "http", scope.get("caller", ANONYMOUS),
            parse_timeout(timeout, ("header", "X-Request-Timeout")),
            scope.setdefault("log_fields", {}), arrived=scope.get(ARRIVED),
        )  # fmt: skip
        scope["context"] = ctx
    return ctx


LeanEndpoint = Callable[[LeanRequest], Awaitable[Encoded]]


class LeanRoute(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        kwargs["response_model"] = None  # endpoints return an Answer, not a model
        super().__init__(path, endpoint, **kwargs)

    async def serve(self, request: LeanRequest) -> Encoded:
        """The endpoint's answer; domain errors answered in the route's protocol's form."""
        endpoint: LeanEndpoint = self.endpoint
        try:
            return await endpoint(request)
        except ServiceError as exc:
            return self.render_error(exc)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        async def handler(request: Request) -> Response:
            try:
                body = await request.body()
            except ClientDisconnect:
                return response_of(self.render_error(ClientDisconnected("the client left")))
            return response_of(await self.serve(LeanRequest(request.scope, body)))

        return handler

    def render_error(self, exc: ServiceError) -> Answer:
        return problem_answer(exc)


class OIPRoute(LeanRoute):
    def render_error(self, exc: ServiceError) -> Answer:
        return oip_error_answer(exc)


def operation_id(route: APIRoute) -> str:
    """Stable OpenAPI operation ids: the endpoint's function name."""
    return route.name


def router(prefix: str, tag: str, route_class: type[APIRoute] = APIRoute) -> APIRouter:
    return APIRouter(
        prefix=prefix,
        tags=[tag],
        route_class=route_class,
        generate_unique_id_function=operation_id,
    )


def mount(app: FastAPI, *routers: APIRouter) -> None:
    """Put the routers' routes straight into the app's one routing table, in order. (FastAPI's
    include_router would wrap each router in a layer of its own, matched and entered on every
    request; these routers need none of what it adds: prefixes are already in their paths.)"""
    for router in routers:
        app.router.routes.extend(router.routes)
