"""Reading request bodies: the content type (415) and the bytes. Size limits are the edge's
(service.api.edge); parsing is the codecs' (service.codecs)."""

from __future__ import annotations

from starlette.requests import Request

from service.api.routing import LeanRequest
from service.errors import UnsupportedMediaType


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
