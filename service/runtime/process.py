"""The engine process's engine: with several front-end processes, the `rnn-serve` process runs
the engine host (`service.runtime.host`) and its server (`service.runtime.transport.server`) on an
event loop of their own, in a thread, while its main thread supervises the front-ends."""

from __future__ import annotations

import asyncio
import logging
import threading

from service.core.settings import Settings

log = logging.getLogger("rnn_serve.engine")


class EngineThread:
    """The engine process's engine: the host and its server on an event loop of their own, in a
    thread (the process's main thread supervises the front-ends)."""

    def __init__(self, settings: Settings, socket_path: str) -> None:
        self.settings, self.path = settings, socket_path
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="rnn-engine-host", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._started.wait()
        if self._failed is not None:
            raise RuntimeError("the engine failed to start") from self._failed

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=self.settings.shutdown_timeout_s + 10)

    def _run(self) -> None:
        import uvloop

        uvloop.run(self._main())

    async def _main(self) -> None:
        from service.core.metrics import Metrics
        from service.runtime.host import EngineHost
        from service.runtime.transport.server import EngineServer

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            host = EngineHost(self.settings, Metrics())
            host.start()
            server = EngineServer(host.backend, self.path)
            await server.start()
        except BaseException as exc:
            self._failed = exc
            self._started.set()
            raise
        self._started.set()
        log.info("the engine takes the front-ends' requests on %s", self.path)
        await self._stop.wait()
        await server.close()
        await host.close()
