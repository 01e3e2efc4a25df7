"""`LocalBackend`: the engine and the sessions in this process (see `service.engine.backend`).

The sessions, read through to Redis when sessions are kept there, are `service.sessions.cache`'s;
this adapter runs their chunks on the engine and answers the rest of the `Backend` calls.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence

from service.catalog.catalog import Catalog
from service.catalog.spec import ModelSpec
from service.core.schemas.config import RNNConfig
from service.engine.backend import Expect, SessionView
from service.engine.engine import Engine
from service.engine.job import ForwardJob, ForwardResult
from service.engine.modules import ModuleCache
from service.engine.state import SessionState
from service.engine.tensor import WireTensor
from service.engine.weights import seeded_weights
from service.sessions.cache import Sessions
from service.sessions.memory import SessionStore
from service.sessions.redis_store import RedisSessions


class LocalBackend:
    """The engine and the sessions in this process."""

    def __init__(
        self,
        engine: Engine,
        store: SessionStore,
        catalog: Catalog,
        modules: ModuleCache,
        durable: RedisSessions | None = None,
    ) -> None:
        self.engine = engine
        self.sessions = Sessions(store, catalog, durable)
        self.catalog = catalog
        self.modules = modules
        self.device = modules.device.type
        self.readiness: tuple[bool, str] = (False, "warming up the default model")

    async def forward(self, spec: ModelSpec, job: ForwardJob) -> ForwardResult:
        return await self.engine.forward(spec, job)

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
        run = functools.partial(self.engine.forward, spec)
        return await self.sessions.chunk(
            session_id, spec, job, run, close=close, owner=owner, expect=expect
        )

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
        return await self.sessions.open(
            spec, state0, batch_size=batch_size, session_id=session_id, replace=replace,
            owner=owner,
        )  # fmt: skip

    async def import_session(
        self,
        spec: ModelSpec,
        state: SessionState,
        *,
        session_id: str | None = None,
        owner: str | None = None,
    ) -> SessionView:
        return await self.sessions.import_state(spec, state, session_id=session_id, owner=owner)

    async def export_state(self, session_id: str, owner: str | None = None) -> SessionState:
        return await self.sessions.export(session_id, owner)

    async def fork_session(self, session_id: str, owner: str | None = None) -> SessionView:
        return await self.sessions.fork(session_id, owner)

    async def session(
        self, session_id: str, owner: str | None = None, fresh: bool = True
    ) -> SessionView:
        return await self.sessions.view(session_id, owner, fresh)

    async def close_session(self, session_id: str, owner: str | None = None) -> None:
        await self.sessions.close(session_id, owner)

    async def end_model(self, name: str) -> None:
        self.sessions.end_model(name)
        self.modules.forget(name)
        self.catalog.forget_metrics(name)

    async def ready(self) -> tuple[bool, str]:
        return self.sessions.health(self.readiness)

    async def is_loaded(self, spec: ModelSpec) -> bool:
        return self.modules.is_built(spec)

    async def load(self, spec: ModelSpec) -> None:
        await self.engine.warmup(spec)

    async def unload(self, spec: ModelSpec) -> bool:
        return await asyncio.to_thread(self.modules.unload, spec)

    async def seeded_weights(self, config: RNNConfig) -> bytes:
        return await asyncio.to_thread(seeded_weights, config)
