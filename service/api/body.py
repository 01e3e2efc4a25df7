"""Reading request bodies: the content type (415) and the bytes. Size limits are the BodyLimit
middleware's; parsing is the codecs' (service.codecs)."""

from __future__ import annotations

from starlette.requests import Request

from service.errors import UnsupportedMediaType


def is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def json_body(request: Request) -> bytes:
    """The raw body of a JSON request; 415 unless its content type is JSON."""
    content_type = request.headers.get("content-type")
    if not is_json(content_type):
        raise UnsupportedMediaType(
            f"expected Content-Type application/json, got {content_type or 'none'}"
        )
    return await request.body()
