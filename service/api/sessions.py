"""Streaming sessions over HTTP: the server holds the hidden state between chunks."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response

from service.api import problems
from service.api.body import may_hide_bools, parse, read_json
from service.api.deps import ModelNamePath
from service.api.openapi import json_body
from service.api.v1 import forward_answer, registered_target
from service.engine.codec import decode_tensor
from service.engine.engine import Engine
from service.engine.sessions import Session, SessionStore
from service.engine.validate import INPUT, validate_forward
from service.errors import ModelNotFound, SessionNotFound
from service.registry import Registry
from service.schemas.api import ChunkResponse, OpenSession, SessionChunk, SessionInfo
from service.settings import Settings

router = APIRouter(prefix="/v1", tags=["sessions"])
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{16,128}")


def info(session: Session) -> SessionInfo:
    expires = datetime.fromtimestamp(session.expires_at, UTC).isoformat(timespec="seconds")
    return SessionInfo(
        session_id=session.id,
        model=session.model,
        steps=session.steps,
        batch_size=session.batch if session.batched else None,
        expires_at=expires,
    )


def _store(request: Request) -> SessionStore:
    store: SessionStore = request.state.sessions
    return store


@router.post(
    "/models/{name}/sessions",
    summary="Open a streaming session",
    status_code=201,
    openapi_extra=json_body(OpenSession),
    responses={201: {"model": SessionInfo}, **problems.responses(400, 404, 413, 415, 422, 429)},
)
async def open_session(name: ModelNamePath, request: Request) -> SessionInfo:
    registry: Registry = request.state.registry
    settings: Settings = request.state.settings
    entry = registry.get(name)
    obj, body = await read_json(request)
    req = parse(OpenSession, obj)
    h0 = None
    if req.h0 is not None:
        h0 = decode_tensor(
            req.h0, ("body", "h0"), entry.config.dtype, settings.max_tensor_elements,
            check_bools=may_hide_bools(body, 0),
        )  # fmt: skip
    # A client-chosen id lets a load balancer hash it from the very first request.
    proposed = request.headers.get("x-session-id")
    key = proposed if proposed and SESSION_ID.fullmatch(proposed) else None
    return info(_store(request).open(entry, h0, req.batch_size, key=key))


@router.post(
    "/sessions/{session_id}/forward",
    summary="Feed the next chunk; the state carries over",
    openapi_extra=json_body(SessionChunk),
    responses={
        200: {"model": ChunkResponse},
        **problems.responses(400, 404, 409, 413, 415, 422, 429, 503, 504, 507),
    },
)
async def session_forward(session_id: str, request: Request) -> Response:
    state = request.state
    registry: Registry = state.registry
    engine: Engine = state.engine
    settings: Settings = state.settings
    store = _store(request)
    session = store.get(session_id)
    try:
        entry = registry.get(session.model)
    except ModelNotFound:
        store.end_model(session.model)
        raise SessionNotFound(
            f"session {session_id!r} ended: its model {session.model!r} was deleted"
        ) from None
    started = time.perf_counter()
    obj, body = await read_json(request)
    req = parse(SessionChunk, obj)
    config = entry.config
    x = decode_tensor(
        req.input, INPUT, config.dtype, settings.max_tensor_elements,
        check_bools=may_hide_bools(body, 0),
    )  # fmt: skip
    job = validate_forward(config, x, session.initial_h0, req.lengths)
    state.metrics.stages.decode.observe(time.perf_counter() - started)
    key, source = registered_target(registry, entry)
    result = await store.chunk(
        session, entry, job, lambda j: engine.forward(key, source, config, j)
    )
    content = forward_answer(
        entry.name, config, result, req.output_encoding, registry.device,
        session_id=session.id, steps=session.steps,
    )  # fmt: skip
    return Response(content, media_type="application/json")


@router.get(
    "/sessions/{session_id}",
    summary="A session's state",
    responses=problems.responses(404, 422),
)
async def get_session(session_id: str, request: Request) -> SessionInfo:
    return info(_store(request).get(session_id))


@router.delete(
    "/sessions/{session_id}",
    summary="Close a session",
    status_code=204,
    response_class=Response,
    responses=problems.responses(404, 422),
)
async def close_session(session_id: str, request: Request) -> Response:
    _store(request).close(session_id)
    return Response(status_code=204)
