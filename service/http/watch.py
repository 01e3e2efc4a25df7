"""A client that leaves while its forward runs cancels the work: the watch on its connection."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import Receive


class DisconnectWatch:
    """Waits for a request's connection to close (its body already read, the next message
    `receive` gives is http.disconnect) and then cancels the task serving it."""

    __slots__ = ("gone", "receive", "served", "watcher")

    def __init__(self, receive: Receive, served: asyncio.Task[Any]) -> None:
        self.receive, self.served = receive, served
        self.gone = False
        self.watcher: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.watcher = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        message = await self.receive()
        if message["type"] == "http.disconnect":
            self.gone = True
            self.served.cancel()

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.cancel()
