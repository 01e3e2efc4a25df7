"""The engine's side: `EngineServer` takes every front-end's calls on the Unix socket and runs
them on the engine host's `LocalBackend`. Each call names its operation; `OPERATIONS` maps each
name to the method that answers it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from service.catalog.spec import ModelSpec
from service.core import errors
from service.core.errors import NotReady, ServiceError
from service.core.schemas.config import RNNConfig
from service.engine.job import ForwardJob, ForwardResult
from service.engine.shm import Attached
from service.engine.tensor import WireTensor
from service.runtime.local import LocalBackend
from service.runtime.transport.frames import Frames, Header, Tensor
from service.runtime.transport.marshal import (
    carrier,
    error_header,
    nbytes,
    result_arrays,
    state_frame,
    state_of,
    view_header,
)

log = logging.getLogger("rnn_serve.engine")


class _Connection(Frames):
    """One front-end, as the engine sees it."""

    def __init__(self, backend: LocalBackend) -> None:
        super().__init__()
        self.backend = backend
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

    # --- reading a call's tensors, writing its answer -----------------------------------------
    def _tensor(self, d: Tensor | None, payload: bytes, inline: bool, at: list[int]) -> Any:
        if d is None:
            return None
        dtype, shape = carrier(d["t"]), tuple(d["s"])
        if inline:
            n = nbytes(d["t"], shape)
            arr = np.frombuffer(payload, dtype, count=n // dtype.itemsize, offset=at[0])
            at[0] += n
            return WireTensor(arr.reshape(shape), d["t"], True)
        return WireTensor(self._attached().view(d["o"], dtype, shape), d["t"], True)

    def _attached(self) -> Attached:
        if self.arena is None:
            raise errors.MalformedBody("a call named the arena before the front-end's hello")
        return self.arena

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
        arrays = result_arrays(result)
        reply: Header = {"rid": header["rid"], "bs": result.batch_sequences,
                         "q": result.queue_s, "c": result.compute_s, **extra}  # fmt: skip
        if header["inline"]:
            reply["out"] = [
                {"t": d["t"], "s": list(a.shape)}
                for d, a in zip(header["out"], arrays, strict=True)
            ]
            self.send(reply, b"".join(np.ascontiguousarray(a).tobytes() for a in arrays))
            return
        arena = self._attached()
        for d, a in zip(header["out"], arrays, strict=True):
            arena.view(d["o"], a.dtype, tuple(d["s"]))[...] = a
        self.send(reply)

    # --- the operations -------------------------------------------------------------------------
    async def _forward(self, h: Header, payload: bytes) -> None:
        result = await self.backend.forward(self.specs[h["spec"]], self._job(h, payload))
        self._reply_result(h, result, {})

    async def _chunk(self, h: Header, payload: bytes) -> None:
        expect = h.get("expect")
        result, view = await self.backend.chunk(
            h["session"], self.specs[h["spec"]], self._job(h, payload), close=h["close"],
            owner=h["owner"], expect=None if expect is None else tuple(expect),
        )  # fmt: skip
        self._reply_result(h, result, {"session": view_header(view)})

    async def _import(self, h: Header, payload: bytes) -> None:
        state = state_of(h["state"], payload)
        view = await self.backend.import_session(
            self.specs[h["spec"]], state, session_id=h["session"], owner=h["owner"]
        )
        self.send({"rid": h["rid"], "session": view_header(view)})

    async def _export(self, h: Header, payload: bytes) -> None:
        state = await self.backend.export_state(h["session"], h["owner"])
        state_header, data = state_frame(state)
        self.send({"rid": h["rid"], "state": state_header}, data)

    async def _fork(self, h: Header, payload: bytes) -> None:
        view = await self.backend.fork_session(h["session"], h["owner"])
        self.send({"rid": h["rid"], "session": view_header(view)})

    async def _open(self, h: Header, payload: bytes) -> None:
        at = [0]
        state0 = [self._tensor(d, payload, h["inline"], at) for d in h["state0"]]
        # the session keeps its initial state past this call: copy it out of the arena
        own = [None if t is None else WireTensor(np.array(t.array), t.dtype, True)
               for t in state0]  # fmt: skip
        view = await self.backend.open_session(
            self.specs[h["spec"]], own, batch_size=h["batch_size"], session_id=h["session"],
            replace=h["replace"], owner=h["owner"],
        )  # fmt: skip
        self.send({"rid": h["rid"], "session": view_header(view)})

    async def _session(self, h: Header, payload: bytes) -> None:
        view = await self.backend.session(h["session"], h["owner"], h.get("fresh", True))
        self.send({"rid": h["rid"], "session": view_header(view)})

    async def _close(self, h: Header, payload: bytes) -> None:
        await self.backend.close_session(h["session"], h["owner"])
        self.send({"rid": h["rid"]})

    async def _end_model(self, h: Header, payload: bytes) -> None:
        await self.backend.end_model(h["name"])
        self.send({"rid": h["rid"]})

    async def _ready(self, h: Header, payload: bytes) -> None:
        ready, reason = await self.backend.ready()
        self.send({"rid": h["rid"], "ready": ready, "reason": reason,
                   "device": self.backend.device})  # fmt: skip

    async def _load(self, h: Header, payload: bytes) -> None:
        await self.backend.load(self.specs[h["spec"]])
        self.send({"rid": h["rid"]})

    async def _unload(self, h: Header, payload: bytes) -> None:
        unloaded = await self.backend.unload(self.specs[h["spec"]])
        self.send({"rid": h["rid"], "unloaded": unloaded})

    async def _loaded(self, h: Header, payload: bytes) -> None:
        loaded = await self.backend.is_loaded(self.specs[h["spec"]])
        self.send({"rid": h["rid"], "loaded": loaded})

    async def _seeded(self, h: Header, payload: bytes) -> None:
        config = RNNConfig.model_validate(h["config"])
        self.send({"rid": h["rid"]}, await self.backend.seeded_weights(config))

    async def _answer(self, header: Header, payload: bytes) -> None:
        rid = header["rid"]
        try:
            operation = OPERATIONS.get(header["op"])
            if operation is None:
                raise errors.MalformedBody(f"unknown engine call {header['op']!r}")
            await operation(self, header, payload)
        except ServiceError as exc:
            with contextlib.suppress(NotReady):
                self.send({"rid": rid, **error_header(exc)})
        except asyncio.CancelledError:
            # the front-end waits for an answer before it reuses the arena block: give one. (A
            # batch already running in the worker may still read this job's input from the
            # block; rows of a batch are independent, so only this discarded answer could see
            # a reused block's bytes.)
            with contextlib.suppress(NotReady):
                self.send({"rid": rid, **error_header(errors.ClientDisconnected("cancelled"))})
            raise
        except Exception:
            log.exception("engine call %s failed", header.get("op"))
            with contextlib.suppress(NotReady):
                self.send({"rid": rid, **error_header(ServiceError("internal engine error"))})


Operation = Callable[[_Connection, Header, bytes], Awaitable[None]]
#: every call a front-end can make (besides hello, spec and cancel, answered at once), by name
OPERATIONS: dict[str, Operation] = {
    "forward": _Connection._forward,
    "chunk": _Connection._chunk,
    "import": _Connection._import,
    "export": _Connection._export,
    "fork": _Connection._fork,
    "open": _Connection._open,
    "session": _Connection._session,
    "close": _Connection._close,
    "end_model": _Connection._end_model,
    "ready": _Connection._ready,
    "load": _Connection._load,
    "unload": _Connection._unload,
    "loaded": _Connection._loaded,
    "seeded": _Connection._seeded,
}


class EngineServer:
    """Serves the engine host's backend on a Unix socket, to every front-end."""

    def __init__(self, backend: LocalBackend, path: str) -> None:
        self.backend, self.path = backend, path
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: _Connection(self.backend), self.path)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
