"""The forward routes' fast path.

A small request's cost is mostly the framework's: routing through every route, two
AsyncExitStacks, dependency solving and query parsing per request. The forward endpoints need
none of it, so this innermost middleware sends `POST /v1/rnn/forward` and
`POST /v1/models/{name}/forward` straight to the same endpoint functions the FastAPI routes
declare (the routes stay registered: they define the OpenAPI document and are the fallback).
Domain errors become the same problem+json responses; anything unexpected still reaches the
app's 500 handler, outside.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from types import SimpleNamespace

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.problems import service_error_response
from service.errors import ServiceError

Endpoint = Callable[[Request], Awaitable[Response]]


class FastPath:
    def __init__(self, app: ASGIApp, routes: list[tuple[str, str, Endpoint]]) -> None:
        self.app = app
        self.routes = [
            (method, re.compile("^" + re.sub(r"{(\w+)}", r"(?P<\1>[^/]+)", path) + "$"),
             SimpleNamespace(path=path), endpoint)
            for method, path, endpoint in routes
        ]  # fmt: skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for method, pattern, route, endpoint in self.routes:
                if scope["method"] != method:
                    continue
                match = pattern.match(scope["path"])
                if match is None:
                    continue
                scope["path_params"] = match.groupdict()
                scope["route"] = route  # for the metrics' route label
                request = Request(scope, receive)
                try:
                    response = await endpoint(request)
                except ServiceError as exc:
                    response = service_error_response(exc)
                except ClientDisconnect:
                    return  # the caller left while sending its body: nobody to answer
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
