"""The edge on its own, around a plain ASGI app: request ids, the body limit, compressed bodies,
HEAD, the one Authorization header, and an unexpected error that must not close the
connection."""

from __future__ import annotations

import gzip
from typing import Any

import orjson
import pytest
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.types import Message, Receive, Scope, Send

from service.core.errors import ServiceError
from service.core.metrics import Metrics
from service.dataplane.keys import Keys
from service.http import problems
from service.http.edge import Edge
from tests.conftest import make_settings

pytestmark = pytest.mark.anyio


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers the body it read, and the request id the edge gave it."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if body == b"boom":
        raise RuntimeError("an unexpected bug")
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


def edge(**options: Any) -> Edge:
    """The edge over the same layers as the app's: FastAPI's exception handling, then the app."""
    handled = ExceptionMiddleware(echo, handlers={ServiceError: problems._service_error})
    inner = ServerErrorMiddleware(handled, handler=problems._unexpected)
    return Edge(inner, [], Metrics(), max_body_bytes=100, max_weights_bytes=100, **options)


async def call(
    app: Edge,
    body: bytes = b"",
    method: str = "POST",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> tuple[int, dict[bytes, bytes], bytes]:
    scope = {"type": "http", "method": method, "path": "/x", "headers": headers or [],
             "query_string": b"", "root_path": ""}  # fmt: skip
    sent: list[Message] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), content


async def test_request_ids_are_taken_or_made() -> None:
    _, headers, _ = await call(edge(), headers=[(b"x-request-id", b"corr-1")])
    assert headers[b"x-request-id"] == b"corr-1"
    _, headers, _ = await call(edge(), headers=[(b"x-request-id", b"bad id with spaces")])
    assert len(headers[b"x-request-id"]) == 32


async def test_the_body_limit_counts_decompressed_bytes() -> None:
    assert (await call(edge(), b"a" * 100))[0] == 200
    status, _, body = await call(edge(), b"a" * 101)
    assert status == 413
    assert b"RNN_SERVE_MAX_BODY_BYTES" in body
    zipped = gzip.compress(b"b" * 90)
    status, _, body = await call(edge(), zipped, headers=[(b"content-encoding", b"gzip")])
    assert (status, body) == (200, b"b" * 90)
    bomb = gzip.compress(b"b" * 10_000)
    status, _, body = await call(edge(), bomb, headers=[(b"content-encoding", b"gzip")])
    assert status == 413
    assert b"decompresses" in body
    status, _, _ = await call(edge(), b"x", headers=[(b"content-encoding", b"zstd")])
    assert status == 415


async def test_head_is_answered_as_get_without_the_body() -> None:
    status, headers, body = await call(edge(), b"hello", method="HEAD")
    assert (status, body) == (200, b"")
    assert headers[b"content-length"] == b"5"  # the GET answer's headers


async def test_an_unexpected_error_is_an_opaque_500_and_does_not_escape() -> None:
    status, headers, body = await call(edge(), b"boom")  # raising here would close the connection
    assert status == 500
    assert headers[b"content-type"] == b"application/problem+json"
    assert b"an unexpected bug" not in body
    assert orjson.loads(body)["status"] == 500


async def test_one_authorization_header() -> None:
    keys = Keys(make_settings(inference_keys=["k-0123456789"]))
    route_needs_key = edge(keys=keys)
    route_needs_key._match.scope_of = lambda route: "inference"  # type: ignore[method-assign]
    route_needs_key._match.routes = [_AnyRoute()]  # type: ignore[list-item]
    one = [(b"authorization", b"Bearer k-0123456789")]
    assert (await call(route_needs_key, b"ok", headers=one))[0] == 200
    status, _, body = await call(route_needs_key, b"ok", headers=one * 2)
    assert status == 401
    assert b"one Authorization header" in body


class _AnyRoute:
    """A routing-table entry that matches every request (not a lean route)."""

    path = "/x"

    def matches(self, scope: Scope) -> tuple[Any, Scope]:
        from starlette.routing import Match

        return Match.FULL, {}
