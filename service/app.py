"""The app factory. The lifespan owns the catalog, engine and metrics; nothing is global."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.middleware.asyncexitstack import AsyncExitStackMiddleware
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from service import __version__
from service.catalog.catalog import Catalog
from service.core.gcfreeze import freeze_startup_objects
from service.core.metrics import Metrics
from service.core.settings import Settings
from service.core.slow import SlowRequests
from service.core.tracing import tracer_for
from service.dataplane.keys import Keys
from service.dataplane.plane import DataPlane
from service.engine.backend import Backend
from service.http import docs, health, problems, sessions, v1, v2, websocket
from service.http.edge import Edge
from service.http.openapi import openapi_factory
from service.http.routing import mount
from service.runtime.transport.client import RemoteBackend

if TYPE_CHECKING:
    from service.grpc.server import GrpcFrontEnd
    from service.runtime.host import EngineHost

log = logging.getLogger("rnn_serve")


DESCRIPTION = (
    "torch.nn.RNN, nn.LSTM and nn.GRU forward passes over HTTP, computed exactly as torch "
    "computes them. The contract is docs/api.md in the project's repository; the semantics, "
    "docs/semantics.md."
)


class App(FastAPI):
    """FastAPI with rnn-serve's edge in front (`service.http.edge`).

    Every HTTP request crosses the edge first (request id, body limit, metrics, access log) —
    after any middleware added with `add_middleware`; lean routes are served there, and every
    other request goes on through FastAPI's exception handling and router. FastAPI's own
    body-limit and telemetry layers are left out: the edge does that job, answering
    problem+json.
    """

    def __init__(self, *, edge: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._edge_options = edge
        self.keys = edge["keys"]  # (the home page lists models only where no key is needed)

    def build_middleware_stack(self) -> ASGIApp:
        handlers = dict(self.exception_handlers)
        unexpected = handlers.pop(Exception, None) or handlers.pop(500, None)
        app: ASGIApp = AsyncExitStackMiddleware(self.router)  # FastAPI's routes require it
        app = ExceptionMiddleware(app, handlers=handlers, debug=self.debug)
        app = ServerErrorMiddleware(app, handler=unexpected, debug=self.debug)
        app = Edge(app, self.router.routes, **self._edge_options)
        # Middleware added with app.add_middleware() wraps the edge, so that it sees every
        # request, the lean routes' too (none is added by rnn-serve itself).
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        return app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # HTTP goes straight to the stack (FastAPI's and Starlette's own __call__ check for
        # telemetry, root paths and lifespans on every request).
        if scope["type"] == "http" and self.middleware_stack is not None:
            scope["app"] = self
            await self.middleware_stack(scope, receive, send)
            return
        if scope["type"] == "websocket":  # the server's own send: a stuck stream is dropped by it
            scope["rnn_serve.server_send"] = send
        await super().__call__(scope, receive, send)


def _stop_frontend() -> None:
    """The engine's connection was lost: the process that runs the engine (and supervises this
    front-end) died or is stopping. Shut down as on SIGTERM rather than answer 503 forever as
    an orphan holding the listening socket."""
    logging.getLogger("rnn_serve").error(
        "lost the engine (pid %d's parent is now %d): this front-end stops", os.getpid(),
        os.getppid(),
    )  # fmt: skip
    os.kill(os.getpid(), signal.SIGTERM)


async def _announce(settings: Settings, plane: DataPlane) -> None:
    """Say once, when the server first becomes ready, where it listens and where its API docs
    are (with several front-ends, the first one ready says it)."""
    await plane.readiness.first.wait()
    if settings.engine_socket:
        marker = os.path.join(os.path.dirname(settings.engine_socket), "announced")
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    url = f"http://{host}:{settings.port}"
    grpc = f", gRPC on {host}:{settings.grpc_port}" if settings.grpc_port else ""
    log.info(
        "rnn-serve is ready on %s%s: model %r; API docs at %s/docs (ReDoc at %s/redoc)",
        url, grpc, settings.default_model_name, url, url,
    )  # fmt: skip


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()
    # requests still in flight after this long get their connection watched and their deadline
    # armed (the edge and the data plane share the one timer)
    slow = SlowRequests(settings.disconnect_check_after_s)
    tracer = tracer_for(settings.tracing)  # None unless RNN_SERVE_TRACING=true

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        host: EngineHost | None = None
        remote: RemoteBackend | None = None
        backend: Backend
        if settings.engine_socket:  # a front-end process: the engine is another process's
            catalog = Catalog(settings, metrics)
            remote = RemoteBackend(
                settings.engine_socket, settings.shm_arena_bytes, on_engine_lost=_stop_frontend
            )
            try:
                await remote.connect()
            except BaseException:
                await remote.close()
                raise
            backend = remote
            freeze_startup_objects(settings.gc_threshold)
        else:
            # torch is imported here only: a front-end process of a several-process server
            # never does (the engine process owns the device)
            from service.runtime.host import EngineHost

            host = EngineHost(settings, metrics)
            host.start()
            catalog, backend = host.catalog, host.backend
        plane = DataPlane(settings, catalog, backend, metrics, backend.device, slow, tracer)
        watching = asyncio.create_task(plane.follow_readiness())
        announcing = asyncio.create_task(_announce(settings, plane))
        keys: Keys = app.keys  # type: ignore[attr-defined]
        grpc_front: GrpcFrontEnd | None = None
        if settings.grpc_port:  # the gRPC front end, in this process beside HTTP
            from service.grpc.server import GrpcFrontEnd

            grpc_front = GrpcFrontEnd(settings, plane, keys, metrics, tracer)
            await grpc_front.start()
        streams = websocket.Streams(
            settings.max_streams, settings.stream_idle_timeout_s, keys, metrics, tracer
        )
        try:
            yield {"plane": plane, "streams": streams}
        finally:
            plane.stop()
            if grpc_front is not None:
                await grpc_front.stop(settings.shutdown_timeout_s)
            for task in (watching, announcing):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if host is not None:
                await host.close()
            if remote is not None:
                await remote.close()
            catalog.close()

    app = App(
        edge={
            "keys": Keys(settings),
            "metrics": metrics,
            "max_body_bytes": settings.max_body_bytes,
            "max_weights_bytes": settings.max_weights_bytes,
            "slow": slow,
            "tracer": tracer,
        },
        # FastAPI's native OpenTelemetry checks its providers on every request; rnn-serve has its
        # own metrics and logs and configures no OpenTelemetry provider.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        title="rnn-serve",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        separate_input_output_schemas=False,
        docs_url=None,  # served by service.http.docs, from the package (no CDN)
        redoc_url=None,
    )
    problems.install(app)
    # One routing table; the forward routes come first, since the router tries routes in order.
    mount(
        app, v1.forwards, v2.router, sessions.chunks, v1.router, sessions.router, health.router,
        docs.router, websocket.router,
    )  # fmt: skip
    app.openapi = openapi_factory(app)  # type: ignore[method-assign]
    return app


def frontend() -> FastAPI:
    """The app of a front-end process (uvicorn's factory; settings from the environment, the
    engine's socket among them)."""
    from service.core.logs import configure as configure_logging
    from service.http.protocol import TimedHttpToolsProtocol

    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    TimedHttpToolsProtocol.configure(settings)
    return create_app(settings)
