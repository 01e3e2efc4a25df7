"""Lean routes: entries of FastAPI's one routing table that skip FastAPI's per-request machinery.

FastAPI's request handling (dependency solving, parameter and body validation, response
serialisation) and the exception and exit-stack middlewares around its router are a measurable
share of a small request's cost. The forward routes need none of it: their codecs read the body
themselves and they answer their own errors. A `LeanRoute` is an ordinary `APIRoute` — declared
with the same decorators, documented in the same OpenAPI document (parameters and bodies with
`openapi_extra`), labelled the same in metrics — whose ASGI app awaits the endpoint with the bare
Request and answers every error in its protocol's form: problem+json (`LeanRoute`) or the Open
Inference Protocol's `{"error"}` (`OIPRoute`).

`LeanDispatch` sits where the app's middleware stack meets FastAPI's inner layers. It asks the
routing table itself — each route's own `matches`, in the table's order, as the router would —
whether a request's route is lean; if so the route runs at once, else the request goes on
through the exception middleware to the router. There is one table: a route is lean because of
its class, not because it is listed anywhere else.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.problems import oip_error_response, service_error_response
from service.dataplane import Answer
from service.errors import ClientDisconnected, ServiceError

log = logging.getLogger("rnn_serve.errors")
Endpoint = Callable[[Request], Awaitable[Response]]


class InternalError(ServiceError):
    """An unexpected failure: answered 500 with an opaque body; the log has the traceback."""


class LeanRoute(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        handler = self.get_route_handler()

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            response = await handler(Request(scope, receive))
            await response(scope, receive, send)

        self.app = app  # what the router runs, and what LeanDispatch runs directly

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
            except Exception:
                log.exception(
                    "unhandled error on %s %s (request id %s)", request.method,
                    request.url.path, request.scope.get("request_id", "-"),
                )  # fmt: skip
                return render(InternalError("internal server error; the server log has it"))

        return handler

    def render_error(self, exc: ServiceError) -> Response:
        return service_error_response(exc)


class OIPRoute(LeanRoute):
    def render_error(self, exc: ServiceError) -> Response:
        return oip_error_response(exc)


class LeanDispatch:
    """Runs a request whose route (the first full match in the table) is lean; passes every
    other request on to `app` (FastAPI's exception middleware and router).

    The table does not change once the app runs, so the outcome of matching a (method, path) is
    remembered, for the most recent `cache_size` of them: a client that sends a million paths
    costs a bounded dict, and the hot paths are matched once.
    """

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute], cache_size: int = 4096) -> None:
        self.app = app
        # The table's prefix up to its last lean route: past it no match can be lean.
        last = max((i for i, r in enumerate(routes) if isinstance(r, LeanRoute)), default=-1)
        self.routes = list(routes[: last + 1])
        self._matched: OrderedDict[tuple[str, str], tuple[LeanRoute, Scope] | None] = OrderedDict()
        self._cache_size = cache_size

    def _match(self, scope: Scope) -> tuple[LeanRoute, Scope] | None:
        key = (scope["method"], scope["path"])
        found = self._matched.get(key, False)
        if found is not False:
            return found  # type: ignore[return-value]
        found = None
        for route in self.routes:
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                if isinstance(route, LeanRoute):
                    found = (route, child_scope)
                break
        self._matched[key] = found
        if len(self._matched) > self._cache_size:
            self._matched.popitem(last=False)
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            found = self._match(scope)
            if found is not None:
                route, child_scope = found
                scope["endpoint"] = child_scope["endpoint"]
                scope["route"] = route
                scope["path_params"] = dict(child_scope["path_params"])
                await route.app(scope, receive, send)
                return
        await self.app(scope, receive, send)


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
