"""The app factory. The lifespan owns the registry, engine and metrics; nothing is global."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
from fastapi import FastAPI

from service import __version__
from service.api import health, problems, sessions, v1, v2
from service.api.deps import Readiness
from service.api.fastpath import FastPath
from service.api.middleware import BodyLimit, RequestMetrics
from service.api.openapi import openapi_factory
from service.engine.device import configure_torch, resolve_device
from service.engine.engine import Engine
from service.engine.sessions import SessionStore
from service.errors import ModelConflict
from service.metrics import Metrics
from service.registry import ModelEntry, Registry
from service.settings import Settings

log = logging.getLogger("rnn_serve")

DESCRIPTION = (
    "torch.nn.RNN forward passes over HTTP, computed exactly as torch computes them. "
    "Contract: docs in the README and ../shared/design/api.md."
)


def register_default(registry: Registry, settings: Settings) -> ModelEntry:
    """The default model; if the repository holds another config under its name, that wins."""
    name = settings.default_model_name
    try:
        return registry.register(name, settings.default_model)[0]
    except ModelConflict:
        log.warning(
            "the repository's %r differs from RNN_SERVE_DEFAULT_MODEL; serving the repository's",
            name,
        )
        return registry.get(name)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        device = resolve_device(settings.device)
        configure_torch(settings)
        registry = Registry(settings, device, metrics)
        engine = Engine(settings, metrics)
        engine.start()
        session_store = SessionStore(metrics, settings.session_ttl_s, settings.max_sessions)
        sweeper = asyncio.create_task(session_store.sweep(min(60.0, settings.session_ttl_s / 4)))
        readiness = Readiness()

        async def warm() -> None:
            found = await anyio.to_thread.run_sync(registry.load_all)
            log.info("model repository %s: %d models", settings.model_repository, len(found))
            default = await anyio.to_thread.run_sync(register_default, registry, settings)
            key = ("model", default.name, default.config.canonical_key)
            await engine.warmup(key, lambda: registry.module(default.name), default.config)
            # torch, FastAPI and friends leave ~200k long-lived objects that every full
            # collection would walk (~150 ms, a p99 spike under load): move them out of the
            # collector's reach once start-up is done.
            gc.collect()
            gc.freeze()
            readiness.ready = True
            log.info("default model %r is warm on %s", default.name, device)

        warming = asyncio.create_task(warm())
        try:
            yield {
                "settings": settings,
                "metrics": metrics,
                "registry": registry,
                "engine": engine,
                "readiness": readiness,
                "sessions": session_store,
            }
        finally:
            readiness.ready, readiness.reason = False, "shutting down"
            for task in (warming, sweeper):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await engine.close()

    app = FastAPI(
        title="rnn-serve",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=lambda route: route.name,
        separate_input_output_schemas=False,
    )
    problems.install(app)
    app.include_router(v1.router)
    app.include_router(sessions.router)
    app.include_router(v2.router)
    app.include_router(health.router)
    app.add_middleware(
        FastPath,
        routes=[
            ("POST", "/v1/rnn/forward", v1.forward_inline),
            ("POST", "/v1/models/{name}/forward", v1.forward_model),
            ("POST", "/v2/models/{name}/infer", v2.infer),
        ],
    )
    app.add_middleware(
        BodyLimit, max_bytes=settings.max_body_bytes, max_weights_bytes=settings.max_weights_bytes
    )
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.openapi = openapi_factory(app)  # type: ignore[method-assign]
    return app
