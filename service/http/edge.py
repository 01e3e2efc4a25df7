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

Whether a route is lean is asked of the routing table itself — each route's own `matches`, in
the table's order, as the router would — and the outcome for a (method, path) is remembered
(the table does not change once the app runs; the most recent `cache_size` paths are kept).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.codecs.pipeline import Encoded
from service.core.errors import ClientDisconnected, ServiceError, Unauthorized
from service.core.limits import BodyLimits, Limit, body_too_large
from service.core.logs import ACCESS
from service.core.metrics import Metrics
from service.core.slow import SlowRequests
from service.core.tracing import RequestSpan
from service.dataplane.context import RequestIds
from service.dataplane.keys import ADMIN, Keys
from service.http.answer import status_of
from service.http.auth import required_scope
from service.http.body import read_body
from service.http.encoding import BodyDecoder, coding_of
from service.http.problems import problem_answer
from service.http.routing import InternalError, LeanRequest, LeanRoute

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
        self._matched: OrderedDict[tuple[str, str], _Match] = OrderedDict()
        self._cache_size = cache_size
        # metric children, bound once per (method, route, status) and per route
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._latencies: dict[str, Any] = {}

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
            found = _NO_MATCH if scope.get("root_path") else self._match(scope)
            route = found.route.path if found.route is not None else "unmatched"
            if self.tracer is not None:
                span = RequestSpan(
                    self.tracer, scope["method"], route, request_id, scope["headers"]
                )
            refusal = None
            if self.keys is not None and found.scope is not None:
                try:
                    caller = self.keys.check(_authorization(scope), found.scope)
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
            self._record(scope, method, route, status, start, request_id)
            if span is not None:
                span.end(status)
                span = None
        finally:
            in_flight.dec()
            if span is not None:  # the request failed before it answered
                span.end(500)

    def _match(self, scope: Scope) -> _Match:
        """The route the router would run (the first full match), remembered by path."""
        key = (scope["method"], scope["path"])
        found = self._matched.get(key)
        if found is not None:
            return found
        found = _NO_MATCH
        for route in self.routes:
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                found = _Match(route, child_scope.get("path_params", {}), self._scope_of(route))
                break
        self._matched[key] = found
        if len(self._matched) > self._cache_size:
            self._matched.popitem(last=False)
        return found

    def _scope_of(self, route: Any) -> str | None:
        """The API-key scope a route needs (its OpenAPI security requirement)."""
        if self.keys is not None and self.keys.protect_metrics and route.path == "/metrics":
            return ADMIN
        return required_scope(getattr(route, "openapi_extra", None))

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
        watch = _Watch(receive, task)
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

    def _record(
        self, scope: Scope, method: str, route: str, status: int, start: float, rid: str
    ) -> None:
        elapsed = time.perf_counter() - start
        counter = self._counters.get((method, route, status))
        if counter is None:
            counter = self.metrics.requests.labels(method, route, str(status))
            self._counters[(method, route, status)] = counter
        counter.inc()
        latency = self._latencies.get(route)
        if latency is None:
            latency = self._latencies[route] = self.metrics.request_seconds.labels(route)
        latency.observe(elapsed)
        if ACCESS.enabled():
            ACCESS.write({
                "request_id": rid, "method": method, "path": scope["path"], "status": status,
                "duration_ms": round(elapsed * 1e3, 3),
                **scope.get("log_fields", {}),  # model, sequences, batch (forwards)
            })  # fmt: skip


class _Match:
    """What the routing table says of a (method, path)."""

    __slots__ = ("lean", "path_params", "route", "scope")

    def __init__(self, route: Any, path_params: dict[str, Any], scope: str | None) -> None:
        self.route = route
        self.path_params = path_params
        self.scope = scope  # the API-key scope it needs, if any
        self.lean = isinstance(route, LeanRoute)


_NO_MATCH = _Match(None, {}, None)


class _Watch:
    """Waits for a request's connection to close (its body already read, the next message
    `receive` gives is http.disconnect) and then cancels the task serving it."""

    __slots__ = ("gone", "receive", "served", "watcher")

    def __init__(self, receive: Receive, served: asyncio.Task[Any]) -> None:
        self.receive, self.served = receive, served
        self.gone = False
        self.watcher: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.watcher = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        message = await self.receive()
        if message["type"] == "http.disconnect":
            self.gone = True
            self.served.cancel()

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.cancel()


def _authorization(scope: Scope) -> str | None:
    """The request's one Authorization header; 401 for several (which one would decide?)."""
    found = [value for key, value in scope["headers"] if key == b"authorization"]
    if len(found) > 1:
        raise Unauthorized(f"send one Authorization header, not {len(found)}")
    return found[0].decode("latin-1") if found else None


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
