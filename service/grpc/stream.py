"""`ModelStreamInfer`: many sequences (and plain requests) multiplexed on one bidirectional
stream, as `tritonclient.grpc`'s `start_stream` / `async_stream_infer` and its asyncio client's
`stream_infer` send them.

- The caller is checked once, from the stream's metadata; each request then gets its own
  context (its `id` as the request id, echoed in its answer).
- Requests of one sequence (the same model and `sequence_id`) run one after another, in the
  order they came; requests of different sequences, and requests in no sequence, run at once,
  so that chunks arriving together from many streams and sequences meet in the batcher and run
  as one forward.
- Every request is answered with a `ModelStreamInferResponse`: its `infer_response`, or its
  `error_message` (the same text as a unary call's status message). An error ends nothing:
  the stream stays open for the next request.
- At most `RNN_SERVE_GRPC_STREAM_MAX_IN_FLIGHT` requests of a stream are in flight or answered
  and not yet sent: past it, the stream is not read until an answer has gone out, and HTTP/2's
  flow control holds back a client that sends without reading.
- When the call ends (the client cancels, its deadline passes, the server stops), the
  requests still in flight are cancelled, as a disconnect cancels an HTTP request's forward.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from service.codecs import messages as m
from service.codecs.oip import check_version
from service.codecs.oip_grpc import GrpcInfer, stream_answer, stream_error
from service.core.errors import ServiceError, described
from service.dataplane.context import Caller
from service.dataplane.keys import INFERENCE
from service.dataplane.plane import DataPlane
from service.grpc.calls import INTERNAL, Calls, end_span, metadata_of, parse
from service.grpc.status import status_of

log = logging.getLogger("rnn_serve.errors")
ROUTE = "/inference.GRPCInferenceService/ModelStreamInfer"


class Streams:
    def __init__(self, plane: DataPlane, calls: Calls, max_in_flight: int) -> None:
        self.plane = plane
        self.calls = calls
        self.max_in_flight = max_in_flight

    async def serve(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        metadata = metadata_of(context)
        try:
            caller = self.calls.caller(metadata, INFERENCE)
        except ServiceError as exc:
            await context.abort(status_of(exc), described(exc))
        answers: asyncio.Queue[bytes | None] = asyncio.Queue()
        slots = asyncio.Semaphore(self.max_in_flight)
        running: set[asyncio.Task[None]] = set()
        tails: dict[tuple[str, Any], asyncio.Task[None]] = {}  # each sequence's latest request

        # every request holds a slot from when it is read until its answer is sent: a client
        # that sends and never reads is held back, with at most max_in_flight answers kept
        async def answer(codec: GrpcInfer, after: asyncio.Task[None] | None, start: float) -> None:
            try:
                if after is not None and not after.done():  # its sequence's previous request
                    await asyncio.wait([after])  # first (whatever its outcome)
                item = await self._one(codec, context, metadata, caller, start)
            except BaseException:
                slots.release()
                raise
            answers.put_nowait(item)

        async def read() -> None:
            try:
                async for data in requests:
                    await slots.acquire()
                    start = time.perf_counter()
                    try:
                        req = parse(m.ModelInferRequest, data, "ModelInferRequest")
                    except ServiceError as exc:
                        self.calls.record(ROUTE, status_of(exc), start, "-", {})
                        answers.put_nowait(stream_error(described(exc)))
                        continue
                    codec = GrpcInfer(req)
                    key = codec.sequence_key
                    after = tails.get(key) if key is not None else None
                    task = asyncio.create_task(answer(codec, after, start))
                    running.add(task)
                    task.add_done_callback(running.discard)
                    if key is not None:
                        tails[key] = task
                        task.add_done_callback(functools.partial(_forget, tails, key))
                if running:
                    await asyncio.wait(set(running))  # the stream's last answers
            finally:
                answers.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (item := await answers.get()) is not None:
                yield item
                slots.release()
            await reader  # (its error, if reading the requests failed)
        finally:
            reader.cancel()
            for task in list(running):
                task.cancel()

    async def _one(
        self,
        codec: GrpcInfer,
        context: grpc.aio.ServicerContext[Any, Any],
        metadata: dict[str, str],
        caller: Caller,
        start: float,
    ) -> bytes:
        """One request of the stream, answered as its ModelStreamInferResponse."""
        req = codec.req
        ctx = self.calls.context(context, metadata, caller, req.id or None)
        status = grpc.StatusCode.OK
        span = self.calls.span("ModelStreamInfer", ctx, metadata)
        try:
            if req.model_version:
                check_version(req.model_name, req.model_version)
            encoded = await self.plane.infer(ctx, codec, req.model_name)
            return stream_answer(encoded.body)
        except ServiceError as exc:
            status = status_of(exc)
            return stream_error(described(exc), req)
        except asyncio.CancelledError:
            status = grpc.StatusCode.CANCELLED
            raise
        except Exception:
            log.exception("unhandled error on gRPC ModelStreamInfer (request %s)", ctx.request_id)
            status = grpc.StatusCode.INTERNAL
            return stream_error(INTERNAL, req)
        finally:
            self.calls.record(ROUTE, status, start, ctx.request_id, ctx.log)
            end_span(span, status)


def _forget(tails: dict[tuple[str, Any], asyncio.Task[None]], key: Any, task: Any) -> None:
    if tails.get(key) is task:
        del tails[key]
