"""Pure ASGI middleware: the body size limit (413 without reading the body whole) and metrics."""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.problems import MEDIA_TYPE, problem_body
from service.errors import PayloadTooLarge
from service.metrics import Metrics

access_log = logging.getLogger("rnn_serve.access")


class BodyLimit:
    """Refuses a declared Content-Length over the limit at once, and stops reading a streamed
    body as soon as it passes the limit. Weight uploads (PUT .../weights) have their own limit."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_weights_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_weights_bytes = max_weights_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        weights = scope["method"] == "PUT" and scope["path"].endswith("/weights")
        limit = self.max_weights_bytes if weights else self.max_bytes
        setting = "RNN_SERVE_MAX_WEIGHTS_BYTES" if weights else "RNN_SERVE_MAX_BODY_BYTES"
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit() and int(value) > limit:
                detail = f"the body has {int(value)} bytes; the limit is {limit}"
                body = problem_body(413, "payload-too-large", f"{detail} ({setting})")
                await send(
                    {
                        "type": "http.response.start",
                        "status": 413,
                        "headers": [
                            (b"content-type", MEDIA_TYPE.encode()),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(
                        f"the body is over the limit of {limit} bytes ({setting})"
                    )
            return message

        await self.app(scope, limited, send)


class RequestIds:
    """Request ids without uuid4: a random per-process prefix (64 bits) and a counter, 32 hex
    characters in all — unique across replicas and restarts, at the cost of one increment."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._next = itertools.count().__next__

    def new(self) -> str:
        return f"{self._prefix}{self._next():016x}"


class RequestMetrics:
    """Per request: a request id (X-Request-ID, taken or made, echoed back), the request counter
    and latency by route template, and one structured log line. Metric children are bound once
    per (method, route, status), not looked up per request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self.ids = RequestIds()
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._latencies: dict[str, Any] = {}

    def _observe(self, method: str, route: str, status: int, elapsed: float) -> None:
        counter = self._counters.get((method, route, status))
        if counter is None:
            counter = self.metrics.requests.labels(method, route, str(status))
            self._counters[(method, route, status)] = counter
        counter.inc()
        latency = self._latencies.get(route)
        if latency is None:
            latency = self._latencies[route] = self.metrics.request_seconds.labels(route)
        latency.observe(elapsed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        request_id = _given_id(scope) or self.ids.new()
        scope["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            route_path = route.path if route is not None else "unmatched"
            self._observe(scope["method"], route_path, status, elapsed)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    "request",
                    extra={
                        "request_id": request_id,
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round(elapsed * 1e3, 3),
                        **scope.get("log_fields", {}),  # model, sequences, batch (forwards)
                    },
                )


_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")


def _given_id(scope: Scope) -> str | None:
    for key, value in scope["headers"]:
        if key == b"x-request-id" and _ID.match(value):
            return str(value.decode())
    return None
