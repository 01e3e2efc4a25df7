"""The edge: the one layer every HTTP request crosses, first.

It gives each request its id (X-Request-ID, taken or made, echoed back), refuses bodies over the
limit (from Content-Length at once, else as soon as the stream passes it), counts the request and
its latency by route template and status, and writes its access-log line.

Requests whose route is lean (`service.http.routing.LeanRoute`) are served right here: the edge
reads the body, awaits the route's endpoint — which returns an `Answer` or raises a domain
error — and sends the answer in two messages. No Starlette Request or Response object, no
wrapper around `send` or `receive`, no middleware in between: on a small forward the framework's
own layers cost more than the forward itself. Every other request goes on through FastAPI's
exception handling and router (`inner`), with `send` and `receive` wrapped for the status and
the limit.

One concern a module, without paying a middleware layer each: which route (`match.py`, asked
of the routing table itself), the caller's key (`auth.py`, checked by the data plane's `Keys`),
the body within its limit (`body.py`), the watch on a slow request's connection (`watch.py`),
and what the request leaves behind (`record.py`: its metrics and access-log line). The request's
id is the data plane's `RequestIds`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.codecs.pipeline import Encoded
from service.core.errors import ClientDisconnected, ServiceError
from service.core.limits import BodyLimits, Limit, body_too_large
from service.core.metrics import Metrics
from service.core.slow import SlowRequests
from service.core.tracing import RequestSpan
from service.dataplane.context import RequestIds
from service.dataplane.keys import Keys
from service.http.answer import status_of
from service.http.auth import authorization
from service.http.body import read_body
from service.http.encoding import BodyDecoder, coding_of
from service.http.match import NO_MATCH, Matcher
from service.http.problems import problem_answer
from service.http.record import Recorder
from service.http.routing import InternalError, LeanRequest, LeanRoute
from service.http.watch import DisconnectWatch

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

log = logging.getLogger("rnn_serve.errors")


class Edge:
    def __init__(
        self,
        inner: ASGIApp,
        routes: Sequence[BaseRoute],
        metrics: Metrics,
        max_body_bytes: int,
        max_weights_bytes: int,
        keys: Keys | None = None,
        cache_size: int = 4096,
        slow: SlowRequests | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.inner = inner
        self.tracer = tracer  # OpenTelemetry's, when tracing is on (service.core.tracing)
        self.routes = routes
        self.metrics = metrics
        self.body_limits = BodyLimits(max_body_bytes, max_weights_bytes)
        self.keys = keys if keys is not None and keys.enabled else None
        self.ids = RequestIds()
        self.slow = slow if slow is not None else SlowRequests(0.05)
        self._match = Matcher(routes, self.keys, cache_size)
        self._record = Recorder(metrics)

    # --- per request -----------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        start = time.perf_counter()
        method = scope["method"]
        if method == "HEAD":  # a GET route answers HEAD too: its status and headers, no body
            scope = {**scope, "method": "GET"}  # a copy: the server's own still says HEAD
            send = _without_body(send)
        offered = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                offered = value.decode("latin-1")
                break
        scope["request_id"] = request_id = self.ids.take(offered)
        in_flight = self.metrics.in_flight
        in_flight.inc()
        span = None
        try:
            found = NO_MATCH if scope.get("root_path") else self._match(scope)
            route = found.route.path if found.route is not None else "unmatched"
            if self.tracer is not None:
                span = RequestSpan(
                    self.tracer, scope["method"], route, request_id, scope["headers"]
                )
            refusal = None
            if self.keys is not None and found.scope is not None:
                try:
                    caller = self.keys.check(authorization(scope), found.scope)
                    scope["caller"], scope["key_id"] = caller, caller.key_id
                except ServiceError as exc:
                    refusal = found.route.render_error(exc) if found.lean else problem_answer(exc)
            if refusal is not None:
                await _send_answer(send, refusal, request_id, close=False)
                status = refusal.status
            elif not found.lean:
                status, route = await self._pass_on(scope, receive, send, request_id)
            else:
                lean = found.route
                scope["route"], scope["endpoint"] = lean, lean.endpoint
                scope["path_params"] = dict(found.path_params)
                answer, close = await self._serve(lean, scope, receive)
                await _send_answer(send, answer, request_id, close)
                status = status_of(answer)
            self._record(
                scope, method=method, route=route, status=status, start=start, rid=request_id
            )
            if span is not None:
                span.end(status)
                span = None
        finally:
            in_flight.dec()
            if span is not None:  # the request failed before it answered
                span.end(500)

    def _limit(self, scope: Scope) -> Limit:
        return self.body_limits.of(scope["method"], scope["path"])

    @staticmethod
    def _declared_length(scope: Scope) -> int | None:
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit():
                return int(value)
        return None

    async def _serve(
        self, route: LeanRoute, scope: Scope, receive: Receive
    ) -> tuple[Encoded, bool]:
        """A lean route's answer, and whether to close the connection (a body left unread)."""
        limit = self._limit(scope)
        declared = self._declared_length(scope)
        try:
            if declared is not None and declared > limit.value:
                raise body_too_large(limit, declared)
            coding = coding_of(scope)
            decoder = None if coding is None else BodyDecoder(coding, limit)
            body = await read_body(receive, limit, decoder)
        except ServiceError as exc:  # the body may be left unread: close the connection
            return route.render_error(exc), True
        # A client that leaves while its forward runs cancels the work (queued, running or
        # between time slices); it is answered — to nobody, but logged and counted — 499. Only a
        # request still running after `slow.after_s` starts a task to watch its connection: the
        # quick ones, nearly all, pay for neither a task nor a timer of their own.
        task = asyncio.current_task()
        assert task is not None
        watch = DisconnectWatch(receive, task)
        key = self.slow.enter(watch.start)
        try:
            return await route.serve(LeanRequest(scope, body)), False
        except asyncio.CancelledError:
            if not watch.gone:
                raise  # the server's own cancellation (shutdown): not the client's doing
            task.uncancel()
            return route.render_error(ClientDisconnected("the client disconnected")), False
        except ServiceError as exc:
            return route.render_error(exc), False
        except Exception:
            log.exception(
                "unhandled error on %s %s (request id %s)",
                scope["method"], scope["path"], scope["request_id"],
            )  # fmt: skip
            return route.render_error(InternalError("internal server error; see the log")), False
        finally:
            self.slow.leave(key)
            watch.stop()

    async def _pass_on(
        self, scope: Scope, receive: Receive, send: Send, request_id: str
    ) -> tuple[int, str]:
        """Any other request: FastAPI's stack, with the limit on receive and the status and the
        request id taken from send."""
        limit = self._limit(scope)
        declared = self._declared_length(scope)
        status = 500
        header = (b"x-request-id", request_id.encode())
        decoder = None
        try:
            if declared is not None and declared > limit.value:
                raise body_too_large(limit, declared)
            coding = coding_of(scope)
        except ServiceError as exc:  # refused before the app reads any of it: close
            answer = problem_answer(exc)
            await _send_answer(send, answer, request_id, close=True)
            return answer.status, "unmatched"
        if coding is not None:  # the app sees the decoded body, of a length not declared
            decoder = BodyDecoder(coding, limit)
            scope["headers"] = [(k, v) for k, v in scope["headers"]
                                if k not in (b"content-encoding", b"content-length")]  # fmt: skip
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                if decoder is not None:
                    message["body"] = decoder.feed(message.get("body", b""))
                    if not message.get("more_body", False):
                        decoder.finish()
                seen += len(message.get("body", b""))
                if seen > limit.value:
                    raise body_too_large(limit)
            return message

        started = finished = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started, finished
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                message["headers"] = [*message.get("headers", []), header]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                finished = True
            await send(message)

        try:
            await self.inner(scope, limited, send_wrapper)
        except Exception:
            # Starlette's ServerErrorMiddleware has logged it, answered 500 and re-raised; caught
            # here, the server keeps the connection (the client did nothing wrong on it).
            if started and not finished:
                raise  # an answer cut short: only closing the connection tells the client
            if not started:
                log.exception(
                    "unhandled error on %s %s (request id %s)",
                    scope["method"], scope["path"], request_id,
                )  # fmt: skip
                answer = problem_answer(InternalError("internal server error; see the log"))
                await _send_answer(send, answer, request_id, close=False)
                status = answer.status
        finally:
            route = scope.get("route")
            path = route.path if route is not None else "unmatched"
        return status, path


def _without_body(send: Send) -> Send:
    """`send` for a HEAD request: the GET answer's status and headers, its body dropped."""

    async def head_send(message: Message) -> None:
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return head_send


async def _send_answer(send: Send, answer: Encoded, request_id: str, close: bool) -> None:
    headers = [
        (b"content-type", answer.media_type.encode()),
        (b"content-length", str(len(answer.body)).encode()),
        (b"x-request-id", request_id.encode()),
        *((k.lower().encode(), v.encode()) for k, v in answer.headers.items()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status_of(answer), "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})
