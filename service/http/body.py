"""Reading request bodies: the content type (415) and the bytes, within their limit
(`service.core.limits`, decompressed through `service.http.encoding`). The edge reads a lean route's
body with `read_body`; parsing is the codecs' (`service.codecs`)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import Receive

from service.core.errors import ClientDisconnected, UnsupportedMediaType
from service.core.limits import Limit, body_too_large
from service.http.encoding import BodyDecoder
from service.http.routing import LeanRequest


def is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def check_json(content_type: str | None) -> None:
    """415 unless the content type is JSON."""
    if not is_json(content_type):
        raise UnsupportedMediaType(
            f"expected Content-Type application/json, got {content_type or 'none'}"
        )


async def json_body(request: Request) -> bytes:
    """The raw body of a JSON request; 415 unless its content type is JSON."""
    check_json(request.headers.get("content-type"))
    return await request.body()


def lean_json_body(request: LeanRequest) -> bytes:
    """The same for a lean route, whose body the edge has read."""
    check_json(request.header(b"content-type"))
    return request.raw_body


async def read_body(receive: Receive, limit: Limit, decoder: BodyDecoder | None = None) -> bytes:
    """The whole body: 413 past `limit` (decoded bytes, with a decoder), ClientDisconnected if
    the client leaves first."""
    if decoder is not None:
        return await _read_encoded(receive, decoder)
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnected("the client disconnected")
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit.value:
            raise body_too_large(limit)
        return body
    chunks = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected("the client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit.value:
            raise body_too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _read_encoded(receive: Receive, decoder: BodyDecoder) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected("the client disconnected")
        chunks.append(decoder.feed(message.get("body", b"")))
        if not message.get("more_body", False):
            decoder.finish()
            return b"".join(chunks)
