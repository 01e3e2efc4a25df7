"""The engine host: everything that owns the device, started and stopped as one.

The catalog and its built modules, the engine (batcher and worker thread), the sessions and
their sweeper, and the warm-up of the default model. A single-process server runs it inside its
app's lifespan; with several front-end processes it runs in the engine process
(`service.runtime.transport`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import anyio.to_thread

from service.catalog.catalog import Catalog
from service.catalog.spec import ModelSpec
from service.core.errors import ModelConflict, ServiceError, StorageUnavailable
from service.core.gcfreeze import freeze_startup_objects
from service.core.metrics import Metrics
from service.core.settings import Settings
from service.engine.device import configure_torch, resolve_device
from service.engine.engine import Engine
from service.engine.modules import ModuleCache
from service.engine.weights import seeded_weights
from service.runtime.local import LocalBackend
from service.sessions.memory import SessionStore
from service.sessions.redis_store import RedisSessions

log = logging.getLogger("rnn_serve")


def register_default(catalog: Catalog, settings: Settings) -> ModelSpec:
    """The default model; if the repository holds another config under its name, that wins.

    Replicas starting together on an empty repository race to create it: the loser serves the
    winner's, and a model deleted as soon as it was made is registered again."""
    name, config = settings.default_model_name, settings.default_model
    for _ in range(5):
        try:
            return catalog.register(name, config, lambda: seeded_weights(config))[0]
        except ModelConflict:
            found = catalog.find(name)
            if found is None:
                continue
            if found.config != config:
                log.warning(
                    "the repository's %r differs from RNN_SERVE_DEFAULT_MODEL; serving the "
                    "repository's",
                    name,
                )
            return found
    return catalog.get(name)


class EngineHost:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.device = resolve_device(settings.device)
        configure_torch(settings)
        self.catalog = Catalog(settings, metrics)
        self.modules = ModuleCache(settings, self.catalog, self.device, metrics)
        self.engine = Engine(settings, metrics, self.modules.module_for, self.modules.is_built)
        self.engine.serve_on(self.device)
        self.durable: RedisSessions | None = None
        if settings.session_store != "memory":
            self.durable = RedisSessions(
                settings.session_store, metrics, settings.max_sessions,
                settings.session_store_timeout_s, settings.session_store_password_file,
                # a chunk's deadline, then its commit's own time
                hold_s=settings.request_timeout_s + 2 * settings.session_store_timeout_s,
            )  # fmt: skip
        # with a durable store, these are its cache on the device
        self.sessions = SessionStore(
            metrics, settings.session_ttl_s, settings.max_sessions,
            settings.max_session_state_bytes, cache=self.durable is not None,
        )  # fmt: skip
        self.backend = LocalBackend(
            self.engine, self.sessions, self.catalog, self.modules, self.durable
        )
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start the worker, the session sweeper and the warm-up (call on the event loop)."""
        self.engine.start()
        every = min(60.0, self.settings.session_ttl_s / 4)
        self._tasks = [
            asyncio.create_task(self.sessions.sweep(every)),
            asyncio.create_task(self._warm()),
        ]
        if self.durable is not None:
            self._tasks.append(asyncio.create_task(self.durable.watch()))

    async def _warm(self) -> None:
        reason = None
        while True:  # a repository that cannot be reached (an object store down): try again
            try:
                found = await anyio.to_thread.run_sync(self.catalog.load_all)
                break
            except StorageUnavailable as exc:
                if exc.detail != reason:
                    log.error("not ready: %s", exc.detail)
                reason = exc.detail
                self.backend.readiness = (False, exc.detail)
                await asyncio.sleep(2.0)
        try:
            log.info("model repository %s: %d models", self.settings.model_repository, len(found))
            default = await anyio.to_thread.run_sync(register_default, self.catalog, self.settings)
            await self.engine.warmup(default)
        except ServiceError as exc:  # e.g. a corrupt default model in the repository
            reason = f"the default model cannot be served: {exc.detail}"
            log.error("not ready: %s", reason)
            self.backend.readiness = (False, reason)
            return
        except Exception as exc:
            log.exception("not ready: warming up the default model failed")
            self.backend.readiness = (False, f"warming up the default model failed: {exc!r}")
            return
        freeze_startup_objects(self.settings.gc_threshold)
        self.backend.readiness = (True, "ready")
        log.info("default model %r is warm on %s", default.name, self.device)

    async def close(self) -> None:
        self.backend.readiness = (False, "shutting down")
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.engine.close()
        if self.durable is not None:  # every answered chunk is in it already: nothing to hand
            await self.durable.close()
