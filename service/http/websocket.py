"""A session as a WebSocket: `GET /v1/models/{name}/stream` opens one (or resumes one with
`?session_id=`), `GET /v1/sessions/{id}/stream` resumes one; then chunks and answers go both
ways, in order, on the one connection.

- The first frame the server sends is the session (`{"session_id", "model", "steps",
  "batch_size", "expires_at"}`): a client that reconnects compares `steps` with the last step
  it saw answered, and sends its next chunk from there (`start_step`), as over HTTP.
- Text frames carry today's chunk bodies and answers (JSON); binary frames a fixed header and
  one tensor's raw values (`service.codecs.wsbinary`), the answer in the same form.
- Every chunk runs through the data plane as an HTTP chunk does: the same session store,
  exactly-once rules, batching across sockets, limits, metrics (protocol "websocket").
- A chunk's refusal (422, 409, ...) is a text frame `{"error": <problem>}`, and the stream goes
  on. What ends a stream is a close with a code and a reason: `CLOSE_CODES`.
- Bounded: frames are read one at a time (a few wait in the connection's queue:
  RNN_SERVE_STREAM_MAX_IN_FLIGHT), so a client that sends faster than it is answered is held
  back by TCP; a frame over RNN_SERVE_MAX_BODY_BYTES closes with 1009; a stream idle (or not
  reading its answers) for RNN_SERVE_STREAM_IDLE_TIMEOUT_S closes with 4408; past
  RNN_SERVE_MAX_STREAMS open streams a new one closes at once with 1013.
- Keys: `Authorization: Bearer <key>` or `x-api-key`, where the client can set headers; else
  (a browser) in the `Sec-WebSocket-Protocol` list as `rnn-serve.key.<key>` beside
  `rnn-serve`, which the server selects. Never in the URL's query, which access logs keep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from service.codecs.v1 import V1Forward, V1OpenSession
from service.codecs.wsbinary import BinaryChunk
from service.core.errors import (
    Forbidden,
    InvalidInput,
    ModelNotFound,
    ServiceError,
    SessionLost,
    SessionNotFound,
    Unauthorized,
)
from service.core.logs import ACCESS
from service.core.metrics import Metrics
from service.core.schemas.api import MODEL_NAME, SessionChunk
from service.core.tracing import ChunkSpan
from service.dataplane.context import ANONYMOUS, Caller, RequestContext, RequestIds
from service.dataplane.keys import INFERENCE, Keys
from service.dataplane.plane import DataPlane
from service.http import routing
from service.http.problems import problem_answer, status_of
from service.http.sessions import SESSION_ID, info

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

log = logging.getLogger("rnn_serve.errors")
router = routing.router("/v1", "streams")

SUBPROTOCOL = "rnn-serve"
KEY_PROTOCOL = "rnn-serve.key."
#: what ends a stream, and why (the reason travels with the code)
CLOSE_CODES = {
    1000: "the client closed it, or its session was closed",
    1001: "the server is going away",
    1009: "a frame over RNN_SERVE_MAX_BODY_BYTES",
    1011: "an internal error (the server log has it)",
    1012: "the server is restarting (SIGTERM): reconnect, to any replica with sessions in Redis",
    1013: "try again later: too many streams open (RNN_SERVE_MAX_STREAMS), or the server is "
    "overloaded or not ready (its session store unreachable, say)",
    4400: "a bad stream request (a key in the URL's query, a bad session id)",
    4401: "no API key, or an unknown one",
    4403: "the key may not do this",
    4404: "no such model",
    4408: "idle: nothing sent, or answers not read, for RNN_SERVE_STREAM_IDLE_TIMEOUT_S",
    4410: "no such session (unknown, another key's, closed, expired, or its model deleted)",
}
_CODE_OF: dict[type[ServiceError], int] = {
    Unauthorized: 4401, Forbidden: 4403, ModelNotFound: 4404, SessionNotFound: 4410,
    SessionLost: 4410, InvalidInput: 4400,
}  # fmt: skip
_QUERY_KEYS = ("key", "api_key", "apikey", "token", "access_token", "authorization")


class Streams:
    """The open streams of this process, counted against RNN_SERVE_MAX_STREAMS, and what
    every stream shares (the lifespan's state holds it)."""

    def __init__(
        self, limit: int, idle_s: float, keys: Keys, metrics: Metrics, tracer: Tracer | None = None
    ) -> None:
        self.limit, self.open, self.idle_s = limit, 0, idle_s
        self.keys, self.metrics = keys, metrics
        self.tracer = tracer  # OpenTelemetry's, when tracing is on: a span per chunk
        self.ids = RequestIds()
        self._metrics = metrics

    def enter(self) -> bool:
        if self.open >= self.limit:
            return False
        self.open += 1
        self._metrics.websocket_streams.inc()
        return True

    def leave(self) -> None:
        self.open -= 1
        self._metrics.websocket_streams.dec()


def _caller(websocket: WebSocket, keys: Keys) -> Caller:
    if not keys.enabled:
        return ANONYMOUS
    authorization = websocket.headers.get("authorization")
    if authorization is None and "x-api-key" in websocket.headers:
        authorization = f"Bearer {websocket.headers['x-api-key']}"
    if authorization is None:
        for offered in _offered(websocket):
            if offered.startswith(KEY_PROTOCOL):
                authorization = f"Bearer {offered.removeprefix(KEY_PROTOCOL)}"
                break
    if authorization is None:
        raise Unauthorized(
            "this server needs an API key: Authorization: Bearer <key>, x-api-key, or "
            f"{KEY_PROTOCOL}<key> in Sec-WebSocket-Protocol"
        )
    return keys.check(authorization, INFERENCE)


def _offered(websocket: WebSocket) -> list[str]:
    header = websocket.headers.get("sec-websocket-protocol", "")
    return [p.strip() for p in header.split(",") if p.strip()]


class _Stuck(Exception):
    """An answer could not go out within the idle timeout: the client does not read."""


def _abort(websocket: WebSocket) -> None:
    """Drop the connection at once. A client that does not read cannot receive a close frame,
    and a graceful close (or the server's own, after the app) would wait on its full buffers
    for ever. The transport is uvicorn's: reached through the ASGI send callable it gave
    (`App.__call__` keeps it in the scope)."""
    send = websocket.scope.get("rnn_serve.server_send")
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is not None:
        transport.abort()


def _close_code(exc: ServiceError) -> int:
    for cls, code in _CODE_OF.items():
        if isinstance(exc, cls):
            return code
    status = status_of(exc)[0]
    if status in (429, 503):  # overloaded, or not ready: retryable
        return 1013
    return 1011 if status >= 500 else 4400


def _reason(text: str) -> str:
    """A close reason: at most 123 bytes (the frame's limit)."""
    data = text.encode()[:123]
    return data.decode("utf-8", "ignore")


@router.websocket("/models/{name}/stream")
async def model_stream(websocket: WebSocket, name: str) -> None:
    await _serve(websocket, name, websocket.query_params.get("session_id"))


@router.websocket("/sessions/{session_id}/stream")
async def session_stream(websocket: WebSocket, session_id: str) -> None:
    await _serve(websocket, None, session_id)


async def _serve(websocket: WebSocket, model: str | None, session_id: str | None) -> None:
    state: Any = websocket.state
    plane: DataPlane = state.plane
    streams: Streams = state.streams
    metrics = streams.metrics
    subprotocol = SUBPROTOCOL if SUBPROTOCOL in _offered(websocket) else None
    started = time.perf_counter()
    counts = {"chunks": 0, "errors": 0, "frames_in": 0, "frames_out": 0}
    rid = streams.ids.take(websocket.headers.get("x-request-id"))
    close = (1000, "")
    if not streams.enter():
        await websocket.accept(subprotocol)
        await websocket.close(1013, _reason(CLOSE_CODES[1013]))
        return
    try:
        await websocket.accept(subprotocol)
        try:
            if any(k in websocket.query_params for k in _QUERY_KEYS):
                raise InvalidInput.at(
                    ("query",), "a key in the URL ends up in access logs: send it in "
                    "Authorization, x-api-key or Sec-WebSocket-Protocol",
                )  # fmt: skip
            caller = _caller(websocket, streams.keys)
            ctx = RequestContext(rid, "websocket", caller, None, {})
            proposed = websocket.headers.get("x-session-id")  # a load balancer's (nginx's)
            view = await _session(plane, ctx, model, session_id, proposed)
        except ServiceError as exc:
            close = (_close_code(exc), _reason(exc.detail))
            return
        hello = orjson.dumps(info(view).model_dump())
        await _send(websocket, hello, metrics, counts, streams.idle_s)
        close = await _chunks(websocket, plane, streams, ctx, view.id, counts)
    except WebSocketDisconnect as exc:
        close = (exc.code, "")
    except _Stuck:
        close = (4408, "answers not read")
        _abort(websocket)
    except TimeoutError:
        close = (4408, _reason(CLOSE_CODES[4408]))
    except Exception:
        log.exception("unhandled error on a WebSocket stream (%s)", rid)
        close = (1011, _reason(CLOSE_CODES[1011]))
    finally:
        streams.leave()
        if websocket.client_state == WebSocketState.CONNECTED and close[1] != "answers not read":
            with contextlib.suppress(Exception):
                await asyncio.wait_for(websocket.close(*close), streams.idle_s)
        elapsed = time.perf_counter() - started
        if ACCESS.enabled():
            ACCESS.write({
                "request_id": rid, "protocol": "websocket", "method": "GET",
                "path": websocket.url.path, "status": close[0],
                "duration_ms": round(elapsed * 1e3, 3), **counts,
            })  # fmt: skip


async def _session(
    plane: DataPlane, ctx: RequestContext, model: str | None, session_id: str | None,
    proposed: str | None,
) -> Any:  # fmt: skip
    """The stream's session: the one asked for (its owner's only), else a new one (under the id
    a load balancer made and hashed on, as for an HTTP open)."""
    if session_id is not None:
        view = await plane.sessions.info(session_id, ctx.owner)
        if model is not None and view.model != model:
            raise SessionNotFound(f"session {session_id!r} is not a session of model {model!r}")
        return view
    assert model is not None
    if not MODEL_NAME.fullmatch(model):
        raise ModelNotFound(f"no model named {model[:64]!r} is registered")
    key = proposed if proposed and SESSION_ID.fullmatch(proposed) else None
    return await plane.open_session(ctx, plane.model(model), V1OpenSession(b"{}"), key)


async def _send(
    websocket: WebSocket, data: bytes, metrics: Metrics, counts: dict[str, int], within: float
) -> None:
    """A frame out, text for JSON: within the idle timeout (a client that reads nothing holds
    the stream no longer than one that sends nothing)."""
    binary = not data.startswith(b"{")
    message: dict[str, Any] = {"type": "websocket.send"}
    if binary:
        message["bytes"] = data
    else:
        message["text"] = data.decode()
    try:
        await asyncio.wait_for(websocket.send(message), within)
    except TimeoutError:
        raise _Stuck from None
    metrics.websocket_frames.labels("out", "binary" if binary else "text").inc()
    counts["frames_out"] += 1


async def _chunks(
    websocket: WebSocket, plane: DataPlane, streams: Streams, ctx: RequestContext,
    session_id: str, counts: dict[str, int],
) -> tuple[int, str]:  # fmt: skip
    """Chunk after chunk until the client closes; each answered before the next is read."""
    idle, metrics = streams.idle_s, streams.metrics
    while True:
        message = await asyncio.wait_for(websocket.receive(), idle)
        if message["type"] == "websocket.disconnect":
            return int(message.get("code", 1000)), ""
        text, data = message.get("text"), message.get("bytes")
        kind = "text" if text is not None else "binary"
        metrics.websocket_frames.labels("in", kind).inc()
        counts["frames_in"] += 1
        start = time.perf_counter()
        status = 200
        span = None
        if streams.tracer is not None:
            headers = dict(websocket.headers.items())
            span = ChunkSpan(streams.tracer, websocket.url.path, ctx.request_id, headers,
                             counts["frames_in"])  # fmt: skip
        try:
            if text is not None:
                codec: Any = V1Forward(text.encode(), SessionChunk)
            else:
                codec = BinaryChunk(data or b"")
            answer = (await plane.chunk(ctx, codec, session_id)).body
            counts["chunks"] += 1
        except (SessionLost, SessionNotFound) as exc:  # nothing more can go on this stream
            return _close_code(exc), _reason(exc.detail)
        except ServiceError as exc:
            status = status_of(exc)[0]
            counts["errors"] += 1
            answer = b'{"error":' + problem_answer(exc).body + b"}"
        finally:
            metrics.request_done("websocket", "WS", "/v1/sessions/{id}/stream", str(status),
                                 time.perf_counter() - start)  # fmt: skip
            if span is not None:
                span.end(status)
        await _send(websocket, answer, metrics, counts, idle)
