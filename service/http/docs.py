"""The interactive API docs (Swagger UI at /docs, ReDoc at /redoc) with their scripts and styles
served from the installed `fastapi-offline` package, never a CDN: they work on an air-gapped
cluster. And `GET /`: where everything is."""

from __future__ import annotations

import asyncio
import functools
from html import escape
from pathlib import Path

import fastapi_offline
from fastapi import Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from starlette.responses import Response

from service import __version__
from service.core.errors import ModelNotFound, ServiceError
from service.core.schemas.api import Links
from service.dataplane.plane import DataPlane
from service.http import problems, routing

router = routing.router("", "docs")
ASSETS = Path(fastapi_offline.__file__).parent / "static"
_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
ASSET_NAMES = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")
_PREFIX = "/docs/assets"
LINKS = Links(
    name="rnn-serve", version=__version__, docs="/docs", redoc="/redoc",
    openapi="/openapi.json", health="/healthz", ready="/readyz", metrics="/metrics",
    v1="/v1/models", v2="/v2",
)  # fmt: skip


@functools.cache
def _asset(name: str) -> bytes:
    return (ASSETS / name).read_bytes()


@router.get("/", summary="Where everything is: docs, health, metrics and the two APIs",
            responses={200: {"content": {"text/html": {}}}})  # fmt: skip
async def index(request: Request) -> Response:
    if "text/html" in request.headers.get("accept", ""):
        return HTMLResponse(await _home(request))
    return Response(LINKS.model_dump_json(), media_type="application/json")


_LABELS = {
    "docs": "Swagger UI: try every call", "redoc": "ReDoc: the API reference",
    "openapi": "OpenAPI document", "health": "liveness", "ready": "readiness",
    "metrics": "Prometheus metrics", "v1": "the v1 API: registered models (JSON)",
    "v2": "the Open Inference Protocol v2: server metadata (JSON)",
}  # fmt: skip


async def _home(request: Request) -> str:
    """A page for a browser: what this server is, whether it is ready, its models, the links."""
    plane: DataPlane = request.state.plane
    ready = plane.readiness
    state = "ready" if ready.ready else f"not ready: {ready.reason}"
    if getattr(request.app, "keys", None) is not None and request.app.keys.enabled:
        models = "<p>Its models are listed by <code>GET /v1/models</code>, with an API key.</p>"
    else:
        try:
            specs = await asyncio.to_thread(plane.catalog.list)
            rows = "".join(
                f"<li><code>{escape(m.name)}</code>: {escape(m.config.mode)}, input "
                f"{m.config.input_size}, hidden {m.config.hidden_size}, "
                f"{m.config.num_layers} layer(s)</li>"
                for m in specs
            )
            models = f"<h2>Models</h2><ul>{rows}</ul>" if rows else "<p>No models yet.</p>"
        except ServiceError as exc:
            models = f"<p>Models cannot be listed now: {escape(exc.detail)}</p>"
    links = "".join(
        f'<li><a href="{url}">{url}</a>: {_LABELS[name]}</li>'
        for name, url in LINKS.model_dump().items()
        if name in _LABELS
    )
    return (
        '<!doctype html><html lang="en"><meta charset="utf-8"><title>rnn-serve</title>'
        f"<h1>rnn-serve {escape(__version__)}</h1>"
        "<p>An inference server for PyTorch recurrent networks (<code>nn.RNN</code>, "
        "<code>nn.LSTM</code>, <code>nn.GRU</code>): send an input and an optional initial "
        "state, get <code>output</code> and <code>h_n</code> as torch computes them. "
        f"This server is <strong>{escape(state)}</strong>, on {escape(plane.device)}.</p>"
        f"{models}<h2>Links</h2><ul>{links}</ul></html>"
    )


@router.get("/docs", include_in_schema=False)
async def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json", title="rnn-serve — Swagger UI",
        swagger_js_url=f"{_PREFIX}/swagger-ui-bundle.js",
        swagger_css_url=f"{_PREFIX}/swagger-ui.css",
        swagger_favicon_url=f"{_PREFIX}/favicon.png",
        oauth2_redirect_url="/docs/oauth2-redirect",
    )  # fmt: skip


@router.get("/docs/oauth2-redirect", include_in_schema=False)
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc", include_in_schema=False)
async def redoc() -> HTMLResponse:
    return get_redoc_html(
        openapi_url="/openapi.json", title="rnn-serve — ReDoc",
        redoc_js_url=f"{_PREFIX}/redoc.standalone.js", redoc_favicon_url=f"{_PREFIX}/favicon.png",
        with_google_fonts=False,
    )  # fmt: skip


@router.get("/docs/assets/{name}", include_in_schema=False, responses=problems.responses(404))
async def asset(name: str) -> Response:
    if name not in ASSET_NAMES:
        raise ModelNotFound(f"no docs asset {name!r}")
    return Response(
        _asset(name), media_type=_TYPES[Path(name).suffix],
        headers={"Cache-Control": "public, max-age=86400"},
    )  # fmt: skip
