"""uvicorn's httptools protocol with read deadlines and a connection cap.

uvicorn has a keep-alive timeout between requests but none while a request arrives: a client
that sends its head or its body a byte a second holds a connection (and, past the head, a
request task) for as long as it likes. Here:

- the request head must arrive whole within `header_timeout_s` of its first byte (of the
  connection, for its first request): else 408 and the connection is closed;
- a body may pause at most `body_timeout_s` between two reads: else the connection is closed
  (the request then ends as the client's, 499);
- at most `max_connections` connections are open: one more is answered 503 (problem+json, with
  Retry-After) and closed at once;
- a request head holds at most `max_header_bytes` bytes and `max_headers` header fields: past
  either, 431 and the connection is closed (httptools itself buffers a head of any size).

In front of rnn-serve, nginx (deploy/nginx) adds its own: client_header_timeout and
client_body_timeout (60 s each by default, between two reads) and buffers whole requests before
they reach a replica, so slow clients tie up nginx's cheap connections, not the server's.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.core.settings import Settings

ARRIVED = "rnn_serve.arrived"  # the scope's key: when the request's head began to be parsed


def _response(status: int, phrase: str, body: bytes, extra: bytes = b"") -> bytes:
    return (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n".encode()
        + extra
        + b"\r\n"
        + body
    )


def _problem(status: int, slug: str, title: str, detail: str) -> bytes:
    import orjson

    return orjson.dumps({"type": f"urn:rnn-serve:problem:{slug}", "title": title,
                         "status": status, "detail": detail, "errors": []})  # fmt: skip


class TimedHttpToolsProtocol(HttpToolsProtocol):
    header_timeout_s = 10.0
    body_timeout_s = 30.0
    max_connections = 1000
    max_header_bytes = 64 * 1024
    max_headers = 100

    @classmethod
    def configure(cls, settings: Settings) -> None:
        """Take the limits from settings (once a process: the class is what uvicorn is given,
        by name, so that front-end processes find it too)."""
        cls.header_timeout_s = settings.header_timeout_s
        cls.body_timeout_s = settings.body_timeout_s
        cls.max_connections = settings.max_connections
        cls.max_header_bytes = settings.max_header_bytes
        cls.max_headers = settings.max_headers

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._in_head = True  # a head is arriving (or is the next thing to arrive)
        self._head_bytes = 0  # of the head arriving, as far as the reads show it
        self._seen_bytes = 0  # of the head arriving, as its callbacks have shown it
        self._began = False  # a head began in the read being parsed
        self._boundary = False  # a head began or ended, or a message ended, in that read
        self._header_count = 0
        self._refused = False  # answered 431: whatever else arrives is ignored

    def _arm(self, seconds: float, callback: Any) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            body = _problem(503, "too-many-connections", "Service Unavailable",
                            f"this server takes at most {self.max_connections} connections "
                            "(RNN_SERVE_MAX_CONNECTIONS); retry shortly")  # fmt: skip
            transport.write(_response(503, "Service Unavailable", body, b"retry-after: 1\r\n"))
            transport.close()
            return
        self._arm(self.header_timeout_s, self._head_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._began = self._boundary = False
        super().data_received(data)
        if self._in_head and not self._refused:  # this read ended inside a head
            if self._began:  # the head began in this read: what its callbacks have shown of it
                self._head_bytes = self._seen_bytes
            elif not self._boundary:  # the whole read is inside a head that began earlier
                self._head_bytes += len(data)
            if self._head_bytes > self.max_header_bytes:
                self._refuse_head(
                    f"the request head is over {self.max_header_bytes} bytes "
                    "(RNN_SERVE_MAX_HEADER_BYTES)"
                )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope[ARRIVED] = time.perf_counter()  # type: ignore[literal-required]
        self._header_count = self._head_bytes = self._seen_bytes = 0
        self._began = self._boundary = True
        if self._deadline is None:  # a later request on a kept-alive connection
            self._arm(self.header_timeout_s, self._head_too_slow)

    def on_url(self, url: bytes) -> None:
        self._seen_bytes += len(url)
        if not self._refused:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._seen_bytes += len(name) + len(value) + 4
        if self._header_count <= self.max_headers:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head, self._boundary = False, True
        if self._refused:
            return
        if self._header_count > self.max_headers:
            self._refuse_head(
                f"the request has {self._header_count} header fields; the limit is "
                f"{self.max_headers} (RNN_SERVE_MAX_HEADERS)"
            )
            return
        self._arm(self.body_timeout_s, self._body_too_slow)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        self._arm(self.body_timeout_s, self._body_too_slow)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_head, self._boundary = True, True  # the next request's head, if any, is next
        if self._refused:
            return
        self._disarm()
        super().on_message_complete()

    def _refuse_head(self, detail: str) -> None:
        self._refused = True
        self._disarm()
        if self.transport.is_closing():
            return
        body = _problem(431, "request-header-fields-too-large",
                        "Request Header Fields Too Large", detail)  # fmt: skip
        self.transport.write(_response(431, "Request Header Fields Too Large", body))
        self.transport.close()

    def _head_too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        body = _problem(408, "request-timeout", "Request Timeout",
                        f"the request head did not arrive within {self.header_timeout_s:g} s "
                        "(RNN_SERVE_HEADER_TIMEOUT_S)")  # fmt: skip
        self.transport.write(_response(408, "Request Timeout", body))
        self.transport.close()

    def _body_too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()  # the request sees a disconnect: the client's, 499
