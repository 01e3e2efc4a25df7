"""Length-prefixed frames over a stream: a big-endian (header length, payload length), an orjson
header, an optional payload."""

from __future__ import annotations

import asyncio
import struct
from typing import Any, cast

import orjson

from service.core.errors import NotReady

HEAD = struct.Struct(">II")  # header length, payload length
Header = dict[str, Any]
Tensor = dict[str, Any]  # {"t": dtype, "s": shape, "o": offset}


class Frames(asyncio.Protocol):
    """Length-prefixed frames over a stream."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while len(buffer) >= HEAD.size:
            header_length, payload_length = HEAD.unpack_from(buffer)
            end = HEAD.size + header_length + payload_length
            if len(buffer) < end:
                return
            header = orjson.loads(memoryview(buffer)[HEAD.size : HEAD.size + header_length])
            payload = bytes(buffer[HEAD.size + header_length : end])
            del buffer[:end]
            self.on_frame(header, payload)

    def send(self, header: Header, payload: bytes = b"") -> None:
        if self.transport is None or self.transport.is_closing():
            raise NotReady("the engine connection is closed")
        head = orjson.dumps(header)
        self.transport.write(HEAD.pack(len(head), len(payload)) + head + payload)

    def on_frame(self, header: Header, payload: bytes) -> None:
        raise NotImplementedError
