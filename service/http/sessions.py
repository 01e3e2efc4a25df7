"""Streaming sessions over HTTP: the server holds the state between chunks. Chunks run through
the data plane like every forward (service.dataplane.plane)."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import Literal

import orjson
from fastapi import Request, Response

from service.codecs.pipeline import Encoded
from service.codecs.state import to_json
from service.codecs.v1 import V1Forward, V1OpenSession
from service.core.schemas.api import (
    ChunkResponse,
    ExportedState,
    OpenSession,
    SessionChunk,
    SessionInfo,
)
from service.dataplane.keys import INFERENCE
from service.engine.backend import SessionView
from service.engine.state import to_safetensors
from service.http import problems, routing
from service.http.auth import requires
from service.http.body import json_body, lean_json_body
from service.http.deps import ModelNamePath, PlaneDep
from service.http.openapi import json_body_schema
from service.http.routing import LeanRequest, LeanRoute, context_of

router = routing.router("/v1", "sessions")
STATE_MEDIA_TYPE = "application/octet-stream"  # a state as a safetensors file
chunks = routing.router("/v1", "sessions", LeanRoute)
# An id offered by a client or a load balancer is taken only if it could hold 128 random bits,
# as the server's own do (22 URL-safe base64 characters).
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{22,128}")


def info(view: SessionView) -> SessionInfo:
    expires = datetime.fromtimestamp(view.expires_at, UTC).isoformat(timespec="seconds")
    return SessionInfo(
        session_id=view.id,
        model=view.model,
        steps=view.steps,
        batch_size=view.batch_size,
        expires_at=expires,
    )


@router.post(
    "/models/{name}/sessions",
    summary="Open a streaming session",
    status_code=201,
    openapi_extra={**json_body_schema(OpenSession), **requires(INFERENCE)},
    responses={
        201: {"model": SessionInfo},
        **problems.responses(400, 404, 409, 413, 415, 422, 429, 503),
    },
)
async def open_session(name: ModelNamePath, request: Request, plane: PlaneDep) -> SessionInfo:
    spec = plane.model(name)  # 404 before reading the body
    content_type = request.headers.get("content-type")
    if (content_type or "").split(";", 1)[0].strip().lower() == STATE_MEDIA_TYPE:
        codec = V1OpenSession(await request.body(), binary=True)  # an exported state, whole
    else:
        codec = V1OpenSession(await json_body(request))
    # The id a load balancer made (and hashed on), or one the client chose.
    proposed = request.headers.get("x-session-id")
    key = proposed if proposed and SESSION_ID.fullmatch(proposed) else None
    return info(await plane.open_session(context_of(request.scope), spec, codec, key))


@chunks.post(
    "/sessions/{session_id}/forward",
    summary="Feed the next chunk; the state carries over",
    openapi_extra={
        **json_body_schema(SessionChunk),
        **requires(INFERENCE),
        "parameters": [
            {"name": "session_id", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
    },
    responses={
        200: {"model": ChunkResponse},
        **problems.responses(400, 404, 409, 410, 413, 415, 422, 429, 503, 504, 507),
    },
)
async def session_forward(request: LeanRequest) -> Encoded:
    codec = V1Forward(lean_json_body(request), SessionChunk)
    session_id = request.path_params["session_id"]
    return await request.plane.chunk(request.context, codec, session_id)


@router.get(
    "/sessions/{session_id}",
    summary="A session's state",
    openapi_extra=requires(INFERENCE),
    responses=problems.responses(404, 410, 422, 503),
)
async def get_session(session_id: str, request: Request, plane: PlaneDep) -> SessionInfo:
    return info(await plane.sessions.info(session_id, request.scope.get("key_id")))


@router.delete(
    "/sessions/{session_id}",
    summary="Close a session",
    openapi_extra=requires(INFERENCE),
    status_code=204,
    response_class=Response,
    responses=problems.responses(404, 422),
)
async def close_session(session_id: str, request: Request, plane: PlaneDep) -> Response:
    await plane.sessions.close(session_id, request.scope.get("key_id"))
    return Response(status_code=204)


@router.get(
    "/sessions/{session_id}/state",
    summary="Export a session's state (to resume it anywhere, later, or after a loss)",
    openapi_extra=requires(INFERENCE),
    responses={
        200: {
            "model": ExportedState,
            "content": {STATE_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
            "description": "JSON by default; a safetensors file with ?format=safetensors or "
            "Accept: application/octet-stream.",
        },
        **problems.responses(404, 409, 410, 422, 503),
    },
)
async def export_state(
    session_id: str,
    request: Request,
    plane: PlaneDep,
    format: Literal["json", "safetensors"] | None = None,
) -> Response:
    state = await plane.sessions.export(session_id, request.scope.get("key_id"))
    binary = format == "safetensors" or (
        format is None and STATE_MEDIA_TYPE in request.headers.get("accept", "")
    )
    if binary:
        data = await asyncio.to_thread(to_safetensors, state)
        disposition = f'attachment; filename="session-state-{state.steps}.safetensors"'
        return Response(data, media_type=STATE_MEDIA_TYPE,
                        headers={"Content-Disposition": disposition})  # fmt: skip
    return Response(orjson.dumps(to_json(state)), media_type="application/json")


@router.post(
    "/sessions/{session_id}/fork",
    summary="Fork a session: a new one with a copy of its state and step count",
    status_code=201,
    openapi_extra=requires(INFERENCE),
    responses={201: {"model": SessionInfo}, **problems.responses(404, 409, 410, 422, 429, 503)},
)
async def fork_session(session_id: str, request: Request, plane: PlaneDep) -> SessionInfo:
    return info(await plane.sessions.fork(session_id, request.scope.get("key_id")))
