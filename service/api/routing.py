"""Lean routes: entries of FastAPI's one routing table whose endpoints take the bare Request.

FastAPI's request handling (dependency solving, parameter and body validation, response
serialisation) is a measurable share of a small request's cost. The forward routes need none of
it: their codecs read the body themselves. A `LeanRoute` is an ordinary `APIRoute` — matched by
the same router, documented in the same OpenAPI document (parameters and bodies declared with
`openapi_extra`), labelled the same in metrics — whose ASGI handler awaits the endpoint directly
and answers domain errors in its protocol's form: problem+json (`LeanRoute`) or the Open
Inference Protocol's `{"error"}` (`OIPRoute`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from service.api.problems import oip_error_response, service_error_response
from service.dataplane import Answer
from service.errors import ClientDisconnected, ServiceError

Endpoint = Callable[[Request], Awaitable[Response]]


class LeanRoute(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        handler = self.get_route_handler()

        # Mounted directly in the app's routing table (see `mount`), a lean route is this ASGI
        # callable: no request_response wrapper and its exception-handler lookup per request.
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            response = await handler(Request(scope, receive))
            await response(scope, receive, send)

        self.app = app

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint: Endpoint = self.endpoint
        render = self.render_error

        async def handler(request: Request) -> Response:
            try:
                return await endpoint(request)
            except ServiceError as exc:
                return render(exc)
            except ClientDisconnect:  # left while sending its body: counted, answered to no one
                return render(ClientDisconnected("the client disconnected"))

        return handler

    def render_error(self, exc: ServiceError) -> Response:
        return service_error_response(exc)


class OIPRoute(LeanRoute):
    def render_error(self, exc: ServiceError) -> Response:
        return oip_error_response(exc)


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


def log_fields(request: Request) -> dict[str, Any]:
    """The access log line's extra fields for this request (model, sequences, batch)."""
    fields: dict[str, Any] = request.scope.setdefault("log_fields", {})
    return fields


def respond(answer: Answer, status: int = 200) -> Response:
    """The data plane's answer as an HTTP response."""
    return Response(answer.body, status, answer.headers, answer.media_type)
