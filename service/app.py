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
from fastapi.middleware.asyncexitstack import AsyncExitStackMiddleware
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.types import ASGIApp

from service import __version__
from service.api import health, problems, sessions, v1, v2
from service.api.deps import Readiness
from service.api.middleware import BodyLimit, RequestMetrics
from service.api.openapi import openapi_factory
from service.api.routing import LeanDispatch, mount
from service.dataplane import DataPlane
from service.engine.device import configure_torch, resolve_device
from service.engine.engine import Engine
from service.engine.sessions import SessionStore
from service.errors import ModelConflict
from service.metrics import Metrics
from service.registry import ModelSpec, Registry
from service.settings import Settings

log = logging.getLogger("rnn_serve")

DESCRIPTION = (
    "torch.nn.RNN, nn.LSTM and nn.GRU forward passes over HTTP, computed exactly as torch "
    "computes them. The contract is docs/api.md in the project's repository; the semantics, "
    "docs/semantics.md."
)


def register_default(registry: Registry, settings: Settings) -> ModelSpec:
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


class App(FastAPI):
    """FastAPI with a leaner middleware stack.

    rnn-serve's own middlewares (request metrics and logs, the body limit) come first; then lean
    routes run at once (`LeanDispatch`), and every other request goes on through FastAPI's
    exception handling and router. FastAPI's own body-limit and telemetry layers are left out:
    `BodyLimit` does that job, answering problem+json.
    """

    def build_middleware_stack(self) -> ASGIApp:
        handlers = dict(self.exception_handlers)
        unexpected = handlers.pop(Exception, None) or handlers.pop(500, None)
        app: ASGIApp = AsyncExitStackMiddleware(self.router)  # FastAPI's routes require it
        app = ExceptionMiddleware(app, handlers=handlers, debug=self.debug)
        app = ServerErrorMiddleware(app, handler=unexpected, debug=self.debug)
        app = LeanDispatch(app, self.router.routes)
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        return app


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        device = resolve_device(settings.device)
        configure_torch(settings)
        registry = Registry(settings, device, metrics)
        engine = Engine(settings, metrics, registry.module_for)
        engine.start()
        session_store = SessionStore(metrics, settings.session_ttl_s, settings.max_sessions)
        plane = DataPlane(settings, registry, engine, session_store, metrics)
        sweeper = asyncio.create_task(session_store.sweep(min(60.0, settings.session_ttl_s / 4)))
        readiness = Readiness()

        async def warm() -> None:
            found = await anyio.to_thread.run_sync(registry.load_all)
            log.info("model repository %s: %d models", settings.model_repository, len(found))
            default = await anyio.to_thread.run_sync(register_default, registry, settings)
            await engine.warmup(default)
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
                "plane": plane,
            }
        finally:
            readiness.ready, readiness.reason = False, "shutting down"
            for task in (warming, sweeper):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await engine.close()

    app = App(
        title="rnn-serve",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        separate_input_output_schemas=False,
    )
    problems.install(app)
    # One routing table; the forward routes come first, since the router tries routes in order.
    mount(app, v1.forwards, v2.router, sessions.chunks, v1.router, sessions.router, health.router)
    app.add_middleware(
        BodyLimit, max_bytes=settings.max_body_bytes, max_weights_bytes=settings.max_weights_bytes
    )
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.openapi = openapi_factory(app)  # type: ignore[method-assign]
    return app
