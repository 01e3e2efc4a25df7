"""The front-end's side: `RemoteBackend`, the `Backend` interface over the engine socket, with
tensors in this front-end's shared-memory arena."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from service.catalog.spec import ModelSpec
from service.core.errors import NotReady
from service.core.outcome import outlive_cancellation, withdraw_cancellation
from service.core.schemas.config import DType, RNNConfig
from service.engine.backend import Expect, SessionView
from service.engine.job import ForwardJob, ForwardResult
from service.engine.shm import Arena
from service.engine.state import SessionState
from service.engine.tensor import WireTensor
from service.runtime.transport.frames import Frames, Header, Tensor
from service.runtime.transport.marshal import (
    carrier,
    error_of,
    nbytes,
    output_shapes,
    result_of,
    state_frame,
    state_of,
    view,
)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class _Client(Frames):
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
            raise error_of(reply)
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
        out_sizes = [nbytes(dtype, shape) for dtype, shape in outputs]
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
        self, reply: Header, data: bytes, out: list[Tensor], where: tuple[int, int] | None,
        config: RNNConfig,
    ) -> ForwardResult:  # fmt: skip
        arrays = []
        offset = 0
        for d in out if where is not None else reply["out"]:
            dtype, shape = carrier(d["t"]), tuple(d["s"])
            if where is not None:
                arrays.append(np.array(self.arena.view(d["o"], dtype, shape)))  # copied out
            else:
                n = nbytes(d["t"], shape)
                arrays.append(np.frombuffer(data, dtype, offset=offset, count=n // dtype.itemsize)
                              .reshape(shape))  # fmt: skip
                offset += n
        return result_of(config, arrays, reply["bs"], reply.get("q", 0.0), reply.get("c", 0.0))

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
                if header["op"] == "chunk":
                    # a chunk whose commit was on its way when the cancel came may have been
                    # applied: the engine's answer says so, and is this chunk's answer
                    cancels = 1 + await outlive_cancellation(call)
                    if not call.cancelled() and call.exception() is None:
                        withdraw_cancellation(cancels)
                        reply, data = call.result()
                        return self._result(reply, data, out, where, spec.config), reply
                call.add_done_callback(_retrieve)  # its answer is nobody's now
                # the engine may still write into the block: give it back only once it answered
                if where is not None:
                    block, size = where
                    call.add_done_callback(lambda _: self.arena.free(block, size))
                    where = None
                raise
            return self._result(reply, data, out, where, spec.config), reply
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
        *,
        close: bool = False,
        owner: str | None = None,
        expect: Expect = None,
    ) -> tuple[ForwardResult, SessionView]:
        header = {"op": "chunk", "session": session_id, "close": close, "owner": owner,
                  "expect": expect}  # fmt: skip
        result, reply = await self._run(header, spec, job)
        return result, view(reply)

    async def import_session(
        self,
        spec: ModelSpec,
        state: SessionState,
        *,
        session_id: str | None = None,
        owner: str | None = None,
    ) -> SessionView:
        header, payload = state_frame(state)
        call = {"op": "import", "spec": self._spec_id(spec), "state": header, "owner": owner,
                "session": session_id}  # fmt: skip
        reply, _ = await self._call(call, payload)
        return view(reply)

    async def export_state(self, session_id: str, owner: str | None = None) -> SessionState:
        reply, data = await self._call({"op": "export", "session": session_id, "owner": owner})
        return state_of(reply["state"], data)

    async def fork_session(self, session_id: str, owner: str | None = None) -> SessionView:
        reply, _ = await self._call({"op": "fork", "session": session_id, "owner": owner})
        return view(reply)

    async def open_session(
        self,
        spec: ModelSpec,
        state0: Sequence[WireTensor | None],
        *,
        batch_size: int | None = None,
        session_id: str | None = None,
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
        return view(reply)

    async def session(
        self, session_id: str, owner: str | None = None, fresh: bool = True
    ) -> SessionView:
        call = {"op": "session", "session": session_id, "owner": owner, "fresh": fresh}
        reply, _ = await self._call(call)
        return view(reply)

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

    async def seeded_weights(self, config: RNNConfig) -> bytes:
        _, data = await self._call({"op": "seeded", "config": config.model_dump(mode="json")})
        return data

    async def unload(self, spec: ModelSpec) -> bool:
        reply, _ = await self._call({"op": "unload", "spec": self._spec_id(spec)})
        return bool(reply["unloaded"])
