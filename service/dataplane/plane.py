"""The data plane: one protocol-neutral pipeline under every protocol.

decode (the protocol's codec) -> validate in torch's order -> queue -> run (engine) -> encode
(the codec again). Stateless forwards, v1 session chunks and OIP sequence requests all go
through `_serve`; the protocol adapters in `service.http` only read the HTTP request, pick the
codec and write the answer. The data plane owns the stage timers and the access log's fields,
and knows nothing of HTTP (compare KServe's `DataPlane` under its REST and gRPC endpoints).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from service.catalog.catalog import Catalog
from service.catalog.spec import ModelSpec
from service.codecs.pipeline import Codec, Encoded, Sequence, Served, StateCodec
from service.core.errors import (
    DeadlineExceeded,
    Forbidden,
    InvalidInput,
    ModelNotFound,
    NotReady,
    SessionNotFound,
    model_deleted,
)
from service.core.limits import Admission
from service.core.metrics import Metrics, StageTimers, model_label
from service.core.schemas.api import check_model_name
from service.core.schemas.config import RNNConfig
from service.core.settings import Settings
from service.core.slow import SlowRequests
from service.core.tracing import forward_spans
from service.dataplane.context import RequestContext
from service.dataplane.repository import RepositoryExtension
from service.dataplane.sessions import SessionExtension
from service.engine.backend import Backend, SessionView
from service.engine.job import ForwardJob, Inputs
from service.engine.validate import C0, H0, validate_forward

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer


@dataclass
class Readiness:
    """Ready once the backend is (the default model warm); not ready while draining."""

    ready: bool = False
    reason: str = "warming up the default model"
    first: asyncio.Event = field(default_factory=asyncio.Event)  # set once first ready


def _digest(job: ForwardJob) -> str:
    """A chunk's identity for exactly-once retries: its input's dtype, shape, bytes, lengths."""
    x = job.input.array
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{job.input.dtype}{x.shape}{job.lengths}".encode())
    h.update(np.ascontiguousarray(x).data)
    return h.hexdigest()


_ENCODE_ON_LOOP_MAX = 1 << 18  # output elements encoded on the event loop itself


class _Deadline:
    """A forward's deadline: once armed, cancels the task serving the forward at `at`."""

    __slots__ = ("at", "fired", "handle", "task")

    def __init__(self, task: asyncio.Task[Any], at: float) -> None:
        self.task, self.at = task, at
        self.fired = False
        self.handle: asyncio.TimerHandle | None = None

    def arm(self) -> None:
        self.handle = self.task.get_loop().call_at(self.at, self._fire)

    def _fire(self) -> None:
        self.fired = True
        self.task.cancel()

    def disarm(self) -> None:
        if self.handle is not None:
            self.handle.cancel()


class DataPlane:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        backend: Backend,
        metrics: Metrics,
        device: str,
        slow: SlowRequests | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self._tracer = tracer
        self.catalog = catalog
        self.backend = backend
        self.device = device  # the serving device's type, as answers report it
        self._max_elements = settings.max_tensor_elements
        self._admission = Admission(settings)  # the one admission step (service.core.limits)
        self._inline_configs = settings.inline_configs
        self._timeout_s = settings.request_timeout_s
        self._max_sequence_id = settings.max_sequence_id_length
        self._slow = slow if slow is not None else SlowRequests(settings.disconnect_check_after_s)
        self._metrics = metrics
        # the OIP model repository and statistics extensions' door
        self.repository = RepositoryExtension(
            catalog, backend, metrics, settings.max_batch_sequences
        )
        self.sessions = SessionExtension(backend)  # the sessions' door, besides their chunks
        self.readiness = Readiness()
        self._default_model = settings.default_model_name

    # --- health ---------------------------------------------------------------------------------
    async def follow_readiness(self) -> None:
        """Ready while the backend is (the default model warm, the session store answering);
        the task is cancelled when the server drains (`stop`)."""
        while True:
            ready, reason = await self.backend.ready()
            if ready:
                self.device = self.backend.device
                self.readiness.first.set()
            self.readiness.ready, self.readiness.reason = ready, reason
            await asyncio.sleep(0.5 if ready else 0.05)

    def stop(self, reason: str = "shutting down") -> None:
        self.readiness.ready, self.readiness.reason = False, reason

    def check_ready(self) -> None:
        """NotReady (503) with the reason, unless the default model can be served now: warm,
        not draining, and not deleted or broken by hand since."""
        if not self.readiness.ready:
            raise NotReady(self.readiness.reason)
        try:
            self.catalog.get(self._default_model)
        except ModelNotFound:
            raise NotReady(
                f"the default model {self._default_model!r} is gone from the model repository"
            ) from None

    def metrics_exposition(self) -> bytes:
        """The Prometheus text exposition, summed over every process."""
        return self._metrics.render()

    # --- models ---------------------------------------------------------------------------------
    def model(self, name: str, arrived: float | None = None) -> ModelSpec:
        """A registered model's spec as the repository has it now (for a request that arrived
        at `arrived`, a perf_counter reading: as of a moment since); 422 for a bad name, 404.
        On the event loop: one stat when nothing changed (the forward path's lookups), shared
        by the requests that arrived before it."""
        return self.catalog.get(check_model_name(name), arrived)

    # --- forwards -------------------------------------------------------------------------------
    async def infer(self, ctx: RequestContext, codec: Codec, model: str | RNNConfig) -> Encoded:
        """A forward with the registered model of that name, or with an inline config. The
        caller's own deadline (`ctx.timeout_s`) is capped by the server's."""
        started = time.perf_counter()
        if isinstance(model, str):
            spec = self.model(model, ctx.arrived)
        elif self._inline_configs:
            spec = self.catalog.inline(model)
        else:
            raise Forbidden(
                "inline configs are turned off on this server (RNN_SERVE_INLINE_CONFIGS=false): "
                "register the model and use /v1/models/{name}/forward"
            )
        return await self._serve(ctx, spec, codec, started=started)

    async def chunk(self, ctx: RequestContext, codec: Codec, session_id: str) -> Encoded:
        """The next chunk of a v1 session: the state carries over."""
        started = time.perf_counter()
        view = await self.backend.session(session_id, ctx.owner, fresh=False)  # for its model
        try:
            spec = self.catalog.get(view.model, ctx.arrived)
        except ModelNotFound:
            await self.backend.end_model(view.model)
            raise model_deleted(session_id, view.model) from None
        return await self._serve(ctx, spec, codec, started=started, session_id=session_id)

    async def _serve(
        self,
        ctx: RequestContext,
        spec: ModelSpec,
        codec: Codec,
        *,
        started: float,
        session_id: str | None = None,
    ) -> Encoded:
        """The pipeline, once for every protocol: decode, validate, queue and run, encode.
        `started`: when the data plane took the request (perf_counter)."""
        timers = self._metrics.stages_for(model_label(spec.name, spec.inline))
        try:
            answer = await self._pipeline(
                ctx, spec, codec, timers, started=started, session_id=session_id
            )
        except BaseException:
            timers.fail.inc()
            raise
        timers.served()
        return answer

    async def _pipeline(
        self,
        ctx: RequestContext,
        spec: ModelSpec,
        codec: Codec,
        timers: StageTimers,
        *,
        started: float,
        session_id: str | None,
    ) -> Encoded:
        owner, timeout_s, log = ctx.owner, ctx.timeout_s, ctx.log
        decoded = codec.decode(spec.config, self._max_elements)
        inputs, sequence = decoded.inputs, decoded.sequence
        if sequence is not None:
            session_id = await self._sequence(spec, inputs, sequence, owner)
            inputs = replace(inputs, h0=None, c0=None)  # taken by the session when it opened
        job = validate_forward(spec.config, inputs)
        self._admission.admit(spec.config, job.seq_len, job.batch, job.steps())
        expect = None
        if decoded.start_step is not None:
            if session_id is None:
                raise InvalidInput.at(
                    ("body", "start_step"), "start_step is for session and sequence chunks"
                )
            expect = (decoded.start_step, _digest(job))
        decoded_at = time.perf_counter()
        timers.decode.observe(decoded_at - started)

        deadline = self._timeout_s if timeout_s is None else min(timeout_s, self._timeout_s)
        view = None
        # The deadline covers queueing and compute: when it passes, the job is cancelled —
        # dropped from the queue, or, when it runs in time slices, no further slice runs. Its
        # timer is armed only if the forward is still running after `slow.after_s` (most are
        # done by then): asyncio.timeout for every request cost ~4 µs of a small forward's CPU.
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        expiry = _Deadline(task, loop.time() + deadline)
        slow = self._slow
        key = None
        if deadline <= slow.after_s:
            expiry.arm()
        else:
            key = slow.enter(expiry.arm)
        called_at = time.perf_counter()
        try:
            if session_id is None:
                result = await self.backend.forward(spec, job)
            else:
                close = sequence is not None and sequence.end
                result, view = await self.backend.chunk(
                    session_id, spec, job, close=close, owner=owner, expect=expect
                )
        except asyncio.CancelledError:
            if not expiry.fired:
                raise  # not the deadline's doing: a client gone, or the server stopping
            task.uncancel()
            raise DeadlineExceeded(
                f"the forward did not finish within its deadline of {deadline:g}s "
                "(X-Request-Timeout, at most RNN_SERVE_REQUEST_TIMEOUT_S); its remaining work "
                "was dropped"
                + (
                    ""
                    if session_id is None
                    else "; the session's state is as it was before this chunk"
                )
            ) from None
        except SessionNotFound:
            if sequence is None:
                raise
            raise InvalidInput.at(
                ("body", "parameters"),
                f"sequence {sequence.id!r} is not open: send sequence_start first",
            ) from None
        finally:
            if key is not None:
                slow.leave(key)
            expiry.disarm()
        log["model"], log["sequences"], log["batch"] = spec.name, job.batch, result.batch_sequences
        timers.queue.observe(result.queue_s)  # as the engine measured them (any process)
        timers.compute.observe(result.compute_s)

        encode_started = time.perf_counter()
        served = Served(spec, result, self.device, view)
        if result.output.size > _ENCODE_ON_LOOP_MAX:
            # a large answer would hold the event loop (~15 ms a million floats as base64, 30 as
            # JSON):
            # encode it on a thread, and let the other requests go on meanwhile
            answer = await asyncio.to_thread(codec.encode, served)
        else:
            answer = codec.encode(served)
        encoded_at = time.perf_counter()
        timers.encode.observe(encoded_at - encode_started)
        if self._tracer is not None:
            marks = (started, decoded_at, called_at, encode_started, encode_started, encoded_at)
            attributes = {"rnn_serve.model": spec.name, "rnn_serve.sequences": job.batch,
                          "rnn_serve.batch_sequences": result.batch_sequences}  # fmt: skip
            if session_id is not None:
                attributes["rnn_serve.session"] = session_id
            forward_spans(self._tracer, marks, result.queue_s, result.compute_s, attributes)
        return answer

    # --- sessions -------------------------------------------------------------------------------
    async def open_session(
        self, ctx: RequestContext, spec: ModelSpec, codec: StateCodec, session_id: str | None
    ) -> SessionView:
        owner = ctx.owner
        state = codec.decode_import(spec.config, self._max_elements)
        if state is not None:
            return await self.backend.import_session(
                spec, state, session_id=session_id, owner=owner
            )
        h0, c0, batch_size = codec.decode_state(spec.config, self._max_elements)
        return await self.backend.open_session(
            spec, (h0, c0), batch_size=batch_size, session_id=session_id, owner=owner
        )

    async def _sequence(
        self, spec: ModelSpec, inputs: Inputs, sequence: Sequence, owner: str | None
    ) -> str:
        """The OIP sequence extension on the sessions: opened by sequence_start (taking the
        request's h0/c0), continued by later requests with the same id. Sequence ids are the
        client's (often small integers), so each key has its own: another key's sequence 1 is
        not this one's. Returns the session id."""
        if len(sequence.id) > self._max_sequence_id:
            raise InvalidInput.at(
                ("body", "parameters", "sequence_id"),
                f"expected at most {self._max_sequence_id} characters "
                f"(RNN_SERVE_MAX_SEQUENCE_ID_LENGTH), got {len(sequence.id)}",
            )
        kind = "n" if sequence.numeric else "s"
        session_id = f"oip:{spec.name}:{kind}:{sequence.id}"  # the store keeps ids per key
        if sequence.start:
            state0 = (inputs.h0, inputs.c0)
            await self.backend.open_session(
                spec, state0, session_id=session_id, replace=True, owner=owner
            )
        elif inputs.h0 is not None or inputs.c0 is not None:
            loc = H0 if inputs.h0 is not None else C0
            raise InvalidInput.at(loc, "an initial state is only taken with sequence_start")
        return session_id
