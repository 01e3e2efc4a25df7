"""Request bodies sent with a Content-Encoding: gzip and deflate are decoded at the edge, within
the same body limit as plain bodies (counted after decompression, so a small bomb cannot
expand past it); any other coding is 415."""

from __future__ import annotations

import zlib

from starlette.types import Scope

from service.core.errors import MalformedBody, UnsupportedMediaType
from service.core.limits import Limit, body_too_large

_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def coding_of(scope: Scope) -> str | None:
    """The body's content coding (None for identity); 415 for one this server cannot decode."""
    codings: list[str] = [
        c for k, v in scope["headers"] if k == b"content-encoding"
        for c in [v.decode("latin-1").strip().lower()] if c not in ("", "identity")
    ]  # fmt: skip
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in _WBITS:
        return codings[0]
    raise UnsupportedMediaType(
        f"Content-Encoding {', '.join(codings)!r} is not supported: send the body as it is "
        "(identity), gzip or deflate"
    )


class BodyDecoder:
    """Decompresses a body as it arrives, refusing it once it passes `limit` bytes decoded."""

    def __init__(self, coding: str, limit: Limit) -> None:
        self.coding, self.limit = coding, limit
        self._z = zlib.decompressobj(_WBITS[coding])
        self.size = 0

    def feed(self, chunk: bytes) -> bytes:
        try:
            out = self._z.decompress(chunk, self.limit.value - self.size + 1)
        except zlib.error:
            raise MalformedBody(f"the body is not valid {self.coding} data") from None
        self.size += len(out)
        if self.size > self.limit.value or self._z.unconsumed_tail:
            raise body_too_large(self.limit, decoded=True)
        return out

    def finish(self) -> None:
        """The body ended: it must have held one whole compressed stream and nothing after."""
        if not self._z.eof or self._z.unused_data:
            raise MalformedBody(f"the body is not one whole {self.coding} stream")
