"""The engine across processes: front-end processes serve HTTP, one engine process owns the
device.

A front-end's `RemoteBackend` has the `Backend` interface; its calls travel as frames over a
Unix socket to the `EngineServer`, which runs them on the engine host's `LocalBackend`, so the
batcher sees the requests of every front-end and a session works whichever front-end its
request lands on. A frame is a length-prefixed orjson header (the call and the tensors'
descriptors: dtype, shape, offset) and an optional payload. Tensors travel through the
front-end's shared-memory arena (`service.engine.shm`): the request's block holds its inputs and,
once the engine has written it, its answer. A request for which the arena has no room carries
its tensors in the frame's payload instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import struct
import threading
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
import orjson

from service import errors
from service.engine.backend import Backend, Expect, LocalBackend, SessionView
from service.engine.codec import CARRIER, WireTensor
from service.engine.portable import SessionState
from service.engine.runner import ForwardResult
from service.engine.shm import Arena, Attached
from service.engine.validate import ForwardJob
from service.errors import NotReady, ServiceError
from service.registry import ModelSpec, Registry
from service.schemas.config import DType, RNNConfig
from service.settings import Settings

log = logging.getLogger("rnn_serve.engine")
_HEAD = struct.Struct(">II")  # header length, payload length
Header = dict[str, Any]
Tensor = dict[str, Any]  # {"t": dtype, "s": shape, "o": offset}


class _Frames(asyncio.Protocol):
    """Length-prefixed frames over a stream."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while len(buffer) >= _HEAD.size:
            header_length, payload_length = _HEAD.unpack_from(buffer)
            end = _HEAD.size + header_length + payload_length
            if len(buffer) < end:
                return
            header = orjson.loads(memoryview(buffer)[_HEAD.size : _HEAD.size + header_length])
            payload = bytes(buffer[_HEAD.size + header_length : end])
            del buffer[:end]
            self.on_frame(header, payload)

    def send(self, header: Header, payload: bytes = b"") -> None:
        if self.transport is None or self.transport.is_closing():
            raise NotReady("the engine connection is closed")
        head = orjson.dumps(header)
        self.transport.write(_HEAD.pack(len(head), len(payload)) + head + payload)

    def on_frame(self, header: Header, payload: bytes) -> None:
        raise NotImplementedError


# --- what crosses: tensors, specs, results, errors ---------------------------------------------
def _carrier(dtype: DType) -> np.dtype[Any]:
    return CARRIER[dtype]


def _nbytes(dtype: DType, shape: Sequence[int]) -> int:
    return int(np.prod(shape, dtype=np.int64)) * _carrier(dtype).itemsize


def output_shapes(config: RNNConfig, job: ForwardJob) -> list[tuple[int, ...]]:
    """The shapes of output, h_n (and c_n) a job will answer, known before it runs."""
    rows = config.state_rows
    out: tuple[int, ...]
    states: list[tuple[int, ...]]
    if job.batched:
        out = (job.batch, job.seq_len) if config.batch_first else (job.seq_len, job.batch)
        states = [(rows, job.batch, size) for size in config.state_sizes]
    else:
        out = (job.seq_len,)
        states = [(rows, size) for size in config.state_sizes]
    return [(*out, config.output_size), *states]


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _error_header(exc: ServiceError) -> Header:
    return {
        "err": type(exc).__name__,
        "detail": exc.detail,
        "errors": [[list(e.loc), e.msg] for e in exc.errors],
        "retry_after": getattr(exc, "retry_after", None),
        "ext": exc.extensions,
    }


def _error_of(header: Header) -> ServiceError:
    cls = getattr(errors, str(header["err"]), None)
    if not (isinstance(cls, type) and issubclass(cls, ServiceError)):
        cls = ServiceError
    exc = cls.__new__(cls)
    fields = [errors.FieldError(tuple(loc), msg) for loc, msg in header["errors"]]
    ServiceError.__init__(exc, header["detail"], fields)
    if header.get("ext"):
        exc.extensions = dict(header["ext"])
    if header.get("retry_after") is not None:
        exc.retry_after = float(header["retry_after"])  # type: ignore[attr-defined]
    return exc


def _view(header: Header) -> SessionView:
    v = header["session"]
    return SessionView(v["id"], v["model"], v["steps"], v["batch"], v["expires"])


def _view_header(view: SessionView) -> Header:
    return {"id": view.id, "model": view.model, "steps": view.steps, "batch": view.batch_size,
            "expires": view.expires_at}  # fmt: skip


def _state_frame(state: SessionState) -> tuple[Header, bytes]:
    """A state as a header (tags, tensor shapes) and a payload (its tensors' bytes)."""
    parts = [np.ascontiguousarray(p) for p in state.parts]
    header = {
        "model": state.model, "digest": state.weights_digest, "mode": state.mode,
        "dtype": state.dtype, "steps": state.steps, "batched": state.batched,
        "batch": state.batch, "shapes": [list(p.shape) for p in parts],
    }  # fmt: skip
    return header, b"".join(p.tobytes() for p in parts)


def _state_of(h: Header, payload: bytes) -> SessionState:
    dtype = _carrier(h["dtype"])
    parts, at = [], 0
    for shape in h["shapes"]:
        n = _nbytes(h["dtype"], shape)
        parts.append(np.frombuffer(payload, dtype, n // dtype.itemsize, at).reshape(shape).copy())
        at += n
    return SessionState(
        h["model"], h["digest"], h["mode"], h["dtype"], h["steps"], tuple(parts), h["batched"],
        h["batch"],
    )  # fmt: skip


# --- the front-end's side -----------------------------------------------------------------------
class _Client(_Frames):
    def __init__(self, on_reply: Callable[[Header, bytes], None], on_lost: Callable[[], None]):
        super().__init__()
        self._on_reply, self._on_lost = on_reply, on_lost

    def on_frame(self, header: Header, payload: bytes) -> None:
        self._on_reply(header, payload)

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_lost()


class RemoteBackend:
    """`Backend` over the engine socket, with tensors in this front-end's shared-memory arena."""

    def __init__(
        self, path: str, arena_bytes: int, on_engine_lost: Callable[[], None] | None = None
    ) -> None:
        self.path = path
        self.arena = Arena(arena_bytes)
        # The engine lives in the process that started this one: a lost connection means it
        # is gone (killed, crashed) and will not come back; the front-end should go too.
        self._on_engine_lost = on_engine_lost
        self._closing = False
        self._parent = os.getppid()
        self._conn: _Client | None = None
        self._pending: dict[int, asyncio.Future[tuple[Header, bytes]]] = {}
        self._ids = itertools.count()
        self._specs: dict[tuple[Any, ...], int] = {}
        self.device = "unknown"

    async def connect(self, within_s: float = 60.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while True:
            try:
                _, conn = await loop.create_unix_connection(
                    lambda: _Client(self._on_reply, self._on_lost), self.path
                )
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if loop.time() > deadline:
                    raise
                if os.getppid() != self._parent:
                    raise NotReady("the engine's process is gone") from None
                await asyncio.sleep(0.05)
        self._conn = conn
        conn.send({"op": "hello", "arena": self.arena.name})

    async def close(self) -> None:
        self._closing = True
        if self._conn is not None and self._conn.transport is not None:
            self._conn.transport.close()
        self._on_lost()
        self.arena.close()

    def _on_reply(self, header: Header, payload: bytes) -> None:
        future = self._pending.pop(header["rid"], None)
        if future is not None and not future.done():
            future.set_result((header, payload))

    def _on_lost(self) -> None:
        if self._conn is not None and not self._closing and self._on_engine_lost is not None:
            self._on_engine_lost()
        self._conn = None
        self._specs.clear()  # a new connection starts a new table
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(NotReady("the engine process is not reachable"))

    async def _call(self, header: Header, payload: bytes = b"") -> tuple[Header, bytes]:
        if self._conn is None:
            raise NotReady("the engine process is not reachable")
        rid = header.setdefault("rid", next(self._ids))
        future: asyncio.Future[tuple[Header, bytes]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        self._conn.send(header, payload)
        reply, data = await future
        if "err" in reply:
            raise _error_of(reply)
        return reply, data

    def _spec_id(self, spec: ModelSpec) -> int:
        """Specs are sent once per connection, then named by a number."""
        if self._conn is None:
            raise NotReady("the engine process is not reachable")
        key = (spec.key, spec.version)
        number = self._specs.get(key)
        if number is None:
            number = self._specs[key] = len(self._specs)
            self._conn.send({
                "op": "spec", "id": number, "name": spec.name,
                "config": spec.config.model_dump(mode="json"), "version": spec.version,
            })  # fmt: skip
        return number

    def _place(
        self, tensors: Sequence[WireTensor | None], outputs: Sequence[tuple[DType, tuple[int, ...]]]
    ) -> tuple[list[Tensor | None], list[Tensor], tuple[int, int] | None, bytes]:
        """Descriptors for `tensors` (written into one arena block, with room for `outputs`),
        or, if the arena is full, for the tensors in a payload."""
        sizes = [0 if t is None else t.array.nbytes for t in tensors]
        out_sizes = [_nbytes(dtype, shape) for dtype, shape in outputs]
        aligned = [-(-n // 64) * 64 for n in [*sizes, *out_sizes]]
        block = self.arena.alloc(sum(aligned))
        descriptors: list[Tensor | None] = []
        chunks: list[bytes] = []
        at = block if block is not None else 0
        for t, size, room in zip(tensors, sizes, aligned, strict=False):
            if t is None:
                descriptors.append(None)
                continue
            if block is not None:
                self.arena.view(at, t.array.dtype, t.shape)[...] = t.array
            else:
                chunks.append(np.ascontiguousarray(t.array).tobytes())
            descriptors.append({"t": t.dtype, "s": list(t.shape), "o": at})
            at += room if block is not None else size
        out_descriptors: list[Tensor] = []
        for (dtype, shape), room in zip(outputs, aligned[len(tensors) :], strict=True):
            out_descriptors.append(
                {"t": dtype, "s": list(shape), "o": at if block is not None else -1}
            )
            at += room
        where = None if block is None else (block, sum(aligned))
        return descriptors, out_descriptors, where, b"".join(chunks)

    def _job_header(
        self, spec: ModelSpec, job: ForwardJob
    ) -> tuple[Header, tuple[int, int] | None, bytes, list[Tensor]]:
        spec_id = self._spec_id(spec)  # first: it fails if the engine is gone, before any block
        state0 = list(job.state0 or ())
        outputs = [(spec.config.dtype, s) for s in output_shapes(spec.config, job)]
        descriptors, out, where, payload = self._place([job.input, *state0], outputs)
        header: Header = {
            "spec": spec_id, "batched": job.batched, "seq_len": job.seq_len,
            "batch": job.batch, "lengths": job.lengths, "x": descriptors[0],
            "state0": descriptors[1:] if job.state0 is not None else None, "out": out,
            "inline": where is None,
        }  # fmt: skip
        return header, where, payload, out

    def _result(
        self, reply: Header, data: bytes, out: list[Tensor], where: tuple[int, int] | None
    ) -> ForwardResult:
        arrays = []
        offset = 0
        for d in out if where is not None else reply["out"]:
            dtype, shape = _carrier(d["t"]), tuple(d["s"])
            if where is not None:
                arrays.append(np.array(self.arena.view(d["o"], dtype, shape)))  # copied out
            else:
                n = _nbytes(d["t"], shape)
                arrays.append(np.frombuffer(data, dtype, offset=offset, count=n // dtype.itemsize)
                              .reshape(shape))  # fmt: skip
                offset += n
        return ForwardResult(
            arrays[0], arrays[1], arrays[2] if len(arrays) > 2 else None, None, reply["bs"],
            reply.get("q", 0.0), reply.get("c", 0.0),
        )  # fmt: skip

    async def _run(
        self, header: Header, spec: ModelSpec, job: ForwardJob
    ) -> tuple[ForwardResult, Header]:
        job_header, where, payload, out = self._job_header(spec, job)
        header.update(job_header)
        header["rid"] = rid = next(self._ids)
        try:
            call = asyncio.ensure_future(self._call(header, payload))
            try:
                reply, data = await asyncio.shield(call)
            except asyncio.CancelledError:
                # a deadline or a client gone: the engine drops the job (or its next slices)
                if self._conn is not None and not call.done():
                    self._conn.send({"op": "cancel", "target": rid})
                call.add_done_callback(_retrieve)  # its answer is nobody's now
                # the engine may still write into the block: give it back only once it answered
                if where is not None:
                    block, size = where
                    call.add_done_callback(lambda _: self.arena.free(block, size))
                    where = None
                raise
            return self._result(reply, data, out, where), reply
        finally:
            if where is not None:
                self.arena.free(*where)

    # --- Backend ---------------------------------------------------------------------------------
    async def forward(self, spec: ModelSpec, job: ForwardJob) -> ForwardResult:
        result, _ = await self._run({"op": "forward"}, spec, job)
        return result

    async def chunk(
        self,
        session_id: str,
        spec: ModelSpec,
        job: ForwardJob,
        close: bool = False,
        owner: str | None = None,
        expect: Expect = None,
    ) -> tuple[ForwardResult, SessionView]:
        header = {"op": "chunk", "session": session_id, "close": close, "owner": owner,
                  "expect": expect}  # fmt: skip
        result, reply = await self._run(header, spec, job)
        return result, _view(reply)

    async def import_session(
        self,
        spec: ModelSpec,
        state: SessionState,
        session_id: str | None = None,
        owner: str | None = None,
    ) -> SessionView:
        header, payload = _state_frame(state)
        call = {"op": "import", "spec": self._spec_id(spec), "state": header, "owner": owner,
                "session": session_id}  # fmt: skip
        reply, _ = await self._call(call, payload)
        return _view(reply)

    async def export_state(self, session_id: str, owner: str | None = None) -> SessionState:
        reply, data = await self._call({"op": "export", "session": session_id, "owner": owner})
        return _state_of(reply["state"], data)

    async def fork_session(self, session_id: str, owner: str | None = None) -> SessionView:
        reply, _ = await self._call({"op": "fork", "session": session_id, "owner": owner})
        return _view(reply)

    async def open_session(
        self,
        spec: ModelSpec,
        state0: Sequence[WireTensor | None],
        batch_size: int | None,
        session_id: str | None,
        replace: bool = False,
        owner: str | None = None,
    ) -> SessionView:
        spec_id = self._spec_id(spec)
        descriptors, _, where, payload = self._place(list(state0), [])
        try:
            header = {
                "op": "open", "spec": spec_id, "state0": descriptors,
                "batch_size": batch_size, "session": session_id, "replace": replace,
                "inline": where is None, "owner": owner,
            }  # fmt: skip
            reply, _ = await self._call(header, payload)
        finally:
            if where is not None:
                self.arena.free(*where)
        return _view(reply)

    async def session(self, session_id: str, owner: str | None = None) -> SessionView:
        reply, _ = await self._call({"op": "session", "session": session_id, "owner": owner})
        return _view(reply)

    async def close_session(self, session_id: str, owner: str | None = None) -> None:
        await self._call({"op": "close", "session": session_id, "owner": owner})

    async def end_model(self, name: str) -> None:
        await self._call({"op": "end_model", "name": name})

    async def ready(self) -> tuple[bool, str]:
        reply, _ = await self._call({"op": "ready"})
        self.device = str(reply["device"])
        return bool(reply["ready"]), str(reply["reason"])

    async def is_loaded(self, spec: ModelSpec) -> bool:
        reply, _ = await self._call({"op": "loaded", "spec": self._spec_id(spec)})
        return bool(reply["loaded"])

    async def load(self, spec: ModelSpec) -> None:
        await self._call({"op": "load", "spec": self._spec_id(spec)})

    async def unload(self, spec: ModelSpec) -> bool:
        reply, _ = await self._call({"op": "unload", "spec": self._spec_id(spec)})
        return bool(reply["unloaded"])


# --- the engine's side --------------------------------------------------------------------------
class _Connection(_Frames):
    """One front-end, as the engine sees it."""

    def __init__(self, backend: LocalBackend, registry: Registry) -> None:
        super().__init__()
        self.backend, self.registry = backend, registry
        self.arena: Attached | None = None
        self.specs: dict[int, ModelSpec] = {}
        self.tasks: dict[int, asyncio.Task[None]] = {}  # by request id

    def connection_lost(self, exc: Exception | None) -> None:
        for task in self.tasks.values():
            task.cancel()
        if self.arena is not None:
            self.arena.close()
            self.arena = None

    def on_frame(self, header: Header, payload: bytes) -> None:
        op = header["op"]
        if op == "hello":
            self.arena = Attached(header["arena"])
        elif op == "spec":
            version = header["version"]
            if version is not None:
                version = (tuple(version[0]), tuple(version[1]) if version[1] else None)
            config = RNNConfig.model_validate(header["config"])
            self.specs[header["id"]] = ModelSpec(header["name"], config, version)
        elif op == "cancel":  # the front-end gave up on a call (a deadline, a client gone)
            running = self.tasks.get(header["target"])
            if running is not None:
                running.cancel()
        else:
            rid = header["rid"]
            task = asyncio.ensure_future(self._answer(header, payload))
            self.tasks[rid] = task
            task.add_done_callback(lambda _: self.tasks.pop(rid, None))

    def _tensor(self, d: Tensor | None, payload: bytes, inline: bool, at: list[int]) -> Any:
        if d is None:
            return None
        dtype, shape = _carrier(d["t"]), tuple(d["s"])
        if inline:
            n = _nbytes(d["t"], shape)
            arr = np.frombuffer(payload, dtype, count=n // dtype.itemsize, offset=at[0])
            at[0] += n
            return WireTensor(arr.reshape(shape), d["t"], True)
        assert self.arena is not None
        return WireTensor(self.arena.view(d["o"], dtype, shape), d["t"], True)

    def _job(self, header: Header, payload: bytes) -> ForwardJob:
        at = [0]
        inline = header["inline"]
        x = self._tensor(header["x"], payload, inline, at)
        state0 = header["state0"]
        parts = None if state0 is None else tuple(
            self._tensor(d, payload, inline, at) for d in state0
        )  # fmt: skip
        lengths = header["lengths"]
        return ForwardJob(
            x, parts, None if lengths is None else tuple(lengths), header["batched"],
            header["seq_len"], header["batch"],
        )  # fmt: skip

    def _reply_result(self, header: Header, result: ForwardResult, extra: Header) -> None:
        arrays = [result.output, result.h_n, *([] if result.c_n is None else [result.c_n])]
        reply: Header = {"rid": header["rid"], "bs": result.batch_sequences,
                         "q": result.queue_s, "c": result.compute_s, **extra}  # fmt: skip
        if header["inline"]:
            reply["out"] = [
                {"t": d["t"], "s": list(a.shape)}
                for d, a in zip(header["out"], arrays, strict=True)
            ]
            self.send(reply, b"".join(np.ascontiguousarray(a).tobytes() for a in arrays))
            return
        assert self.arena is not None
        for d, a in zip(header["out"], arrays, strict=True):
            self.arena.view(d["o"], a.dtype, tuple(d["s"]))[...] = a
        self.send(reply)

    async def _answer(self, header: Header, payload: bytes) -> None:
        rid = header["rid"]
        try:
            op = header["op"]
            backend = self.backend
            if op == "forward":
                result = await backend.forward(
                    self.specs[header["spec"]], self._job(header, payload)
                )
                self._reply_result(header, result, {})
            elif op == "chunk":
                expect = header.get("expect")
                result, view = await backend.chunk(
                    header["session"], self.specs[header["spec"]], self._job(header, payload),
                    header["close"], header["owner"], None if expect is None else tuple(expect),
                )  # fmt: skip
                self._reply_result(header, result, {"session": _view_header(view)})
            elif op == "import":
                state = _state_of(header["state"], payload)
                view = await backend.import_session(
                    self.specs[header["spec"]], state, header["session"], header["owner"]
                )
                self.send({"rid": rid, "session": _view_header(view)})
            elif op == "export":
                state_header, data = _state_frame(
                    await backend.export_state(header["session"], header["owner"])
                )
                self.send({"rid": rid, "state": state_header}, data)
            elif op == "fork":
                view = await backend.fork_session(header["session"], header["owner"])
                self.send({"rid": rid, "session": _view_header(view)})
            elif op == "open":
                at = [0]
                state0 = [self._tensor(d, payload, header["inline"], at) for d in header["state0"]]
                # the session keeps its initial state past this call: copy it out of the arena
                own = [None if t is None else WireTensor(np.array(t.array), t.dtype, True)
                       for t in state0]  # fmt: skip
                view = await backend.open_session(
                    self.specs[header["spec"]], own, header["batch_size"], header["session"],
                    header["replace"], header["owner"],
                )  # fmt: skip
                self.send({"rid": rid, "session": _view_header(view)})
            elif op == "session":
                view = await backend.session(header["session"], header["owner"])
                self.send({"rid": rid, "session": _view_header(view)})
            elif op == "close":
                await backend.close_session(header["session"], header["owner"])
                self.send({"rid": rid})
            elif op == "end_model":
                await backend.end_model(header["name"])
                self.send({"rid": rid})
            elif op == "ready":
                ready, reason = await backend.ready()
                self.send({"rid": rid, "ready": ready, "reason": reason, "device": backend.device})
            elif op == "load":
                await backend.load(self.specs[header["spec"]])
                self.send({"rid": rid})
            elif op == "unload":
                unloaded = await backend.unload(self.specs[header["spec"]])
                self.send({"rid": rid, "unloaded": unloaded})
            elif op == "loaded":
                self.send(
                    {"rid": rid, "loaded": self.registry.is_loaded(self.specs[header["spec"]])}
                )
            else:
                raise errors.MalformedBody(f"unknown engine call {op!r}")
        except ServiceError as exc:
            with contextlib.suppress(NotReady):
                self.send({"rid": rid, **_error_header(exc)})
        except asyncio.CancelledError:
            # the front-end waits for an answer before it reuses the arena block: give one. (A
            # batch already running in the worker may still read this job's input from the
            # block; rows of a batch are independent, so only this discarded answer could see
            # a reused block's bytes.)
            with contextlib.suppress(NotReady):
                self.send({"rid": rid, **_error_header(errors.ClientDisconnected("cancelled"))})
            raise
        except Exception:
            log.exception("engine call %s failed", header.get("op"))
            with contextlib.suppress(NotReady):
                self.send({"rid": rid, **_error_header(ServiceError("internal engine error"))})


class EngineServer:
    """Serves the engine host's backend on a Unix socket, to every front-end."""

    def __init__(self, backend: LocalBackend, registry: Registry, path: str) -> None:
        self.backend, self.registry, self.path = backend, registry, path
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(
            lambda: _Connection(self.backend, self.registry), self.path
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class EngineThread:
    """The engine process's engine: the host and its server on an event loop of their own, in a
    thread (the process's main thread supervises the front-ends)."""

    def __init__(self, settings: Settings, socket_path: str) -> None:
        self.settings, self.path = settings, socket_path
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="rnn-engine-host", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._started.wait()
        if self._failed is not None:
            raise RuntimeError("the engine failed to start") from self._failed

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=self.settings.shutdown_timeout_s + 10)

    def _run(self) -> None:
        import uvloop

        uvloop.run(self._main())

    async def _main(self) -> None:
        from service.engine.host import EngineHost
        from service.metrics import Metrics

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            host = EngineHost(self.settings, Metrics())
            host.start()
            server = EngineServer(host.backend, host.registry, self.path)
            await server.start()
        except BaseException as exc:
            self._failed = exc
            self._started.set()
            raise
        self._started.set()
        log.info("the engine takes the front-ends' requests on %s", self.path)
        await self._stop.wait()
        await server.close()
        await host.close()


__all__ = ["Backend", "EngineServer", "EngineThread", "RemoteBackend"]
