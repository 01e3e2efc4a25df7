"""`LocalBackend`: the engine and the sessions in this process (see `service.engine.backend`)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

from service.catalog.catalog import Catalog
from service.catalog.spec import ModelSpec
from service.engine.backend import Expect, SessionView
from service.engine.engine import Engine
from service.engine.job import ForwardJob, ForwardResult
from service.engine.modules import ModuleCache
from service.engine.session import Session, snapshot
from service.engine.sessions import SessionStore
from service.engine.state import SessionState
from service.engine.tensor import WireTensor
from service.engine.weights import seeded_weights
from service.errors import ModelConflict, ModelNotFound, SessionNotFound, StateMismatch
from service.schemas.config import RNNConfig

if TYPE_CHECKING:
    from service.engine.handoff import Handoff


def view_of(session: Session) -> SessionView:
    batch = session.batch if session.batched else None
    return SessionView(session.id, session.model, session.steps, batch, session.expires_at)


class LocalBackend:
    """The engine and the sessions in this process."""

    def __init__(
        self, engine: Engine, sessions: SessionStore, catalog: Catalog, modules: ModuleCache
    ) -> None:
        self.engine = engine
        self.sessions = sessions
        self.catalog = catalog
        self.modules = modules
        self.device = modules.device.type
        self.readiness: tuple[bool, str] = (False, "warming up the default model")
        self.handoff: Handoff | None = None  # set by the host when sessions can move
        self._digests: dict[tuple[str, object], str] = {}

    async def digest(self, spec: ModelSpec) -> str:
        """The model's weights digest (its config and weights file), once per version."""
        key = (spec.name, spec.version)
        found = self._digests.get(key)
        if found is None:
            found = await asyncio.to_thread(self.catalog.weights_digest, spec)
            if len(self._digests) > 1024:
                self._digests.clear()
            self._digests[key] = found
        return found

    async def _get(self, session_id: str, owner: str | None) -> Session:
        """The session, from this replica or, when it moved, from the one that held it."""
        try:
            return self.sessions.get(session_id, owner)
        except SessionNotFound:
            if self.handoff is None:
                raise
            session = await self.handoff.fetch(session_id, owner)
            if session is None:
                raise
            return session

    async def _spec_of(self, session: Session) -> ModelSpec:
        try:
            spec = self.catalog.get(session.model)
        except ModelNotFound:
            self.sessions.end_model(session.model)
            raise SessionNotFound(
                f"session {session.id!r} ended: its model {session.model!r} was deleted"
            ) from None
        if spec.version != session.version:
            raise ModelConflict(
                f"the weights of model {session.model!r} changed; session {session.id!r} "
                "ends at its next chunk: open a new one"
            )
        return spec

    async def forward(self, spec: ModelSpec, job: ForwardJob) -> ForwardResult:
        return await self.engine.forward(spec, job)

    async def chunk(
        self,
        session_id: str,
        spec: ModelSpec,
        job: ForwardJob,
        close: bool = False,
        owner: str | None = None,
        expect: Expect = None,
    ) -> tuple[ForwardResult, SessionView]:
        try:
            session = await self._get(session_id, owner)
        except SessionNotFound:
            ended = None
            if close and expect is not None:  # a resend of the chunk that closed it?
                ended = self.sessions.ended(session_id, owner, expect)
            if ended is None or ended.last is None:
                raise
            return ended.last.result, view_of(ended)
        run = functools.partial(self.engine.forward, spec)
        result = await self.sessions.chunk(session, spec, job, run, expect)
        if close:
            self.sessions.close(session_id, owner, keep_last=True)
        return result, view_of(session)

    async def open_session(
        self,
        spec: ModelSpec,
        state0: Sequence[WireTensor | None],
        batch_size: int | None,
        session_id: str | None,
        replace: bool = False,
        owner: str | None = None,
    ) -> SessionView:
        h0, c0 = (*state0, None, None)[:2]
        session = self.sessions.open(
            spec, h0, c0, batch_size, key=session_id, replace=replace, owner=owner
        )
        return view_of(session)

    async def import_session(
        self,
        spec: ModelSpec,
        state: SessionState,
        session_id: str | None = None,
        owner: str | None = None,
    ) -> SessionView:
        digest = await self.digest(spec)
        if state.weights_digest != digest:
            raise StateMismatch(
                f"this state was made under other weights ({state.weights_digest}, model "
                f"{state.model!r}) than model {spec.name!r} has now ({digest}); it cannot "
                "resume here"
            )
        h0, c0 = state.initial_state()
        session = self.sessions.open(
            spec, h0, c0, state.batch if state.batched else None, key=session_id, owner=owner,
            steps=state.steps,
        )  # fmt: skip
        return view_of(session)

    async def export_state(self, session_id: str, owner: str | None = None) -> SessionState:
        session = await self._get(session_id, owner)
        spec = await self._spec_of(session)
        digest = await self.digest(spec)
        async with session.lock:  # between chunks
            return snapshot(session, spec, digest)

    async def fork_session(self, session_id: str, owner: str | None = None) -> SessionView:
        session = await self._get(session_id, owner)
        await self._spec_of(session)
        async with session.lock:
            if self.sessions.get_held(session_id, owner) is not session:
                raise SessionNotFound(f"session {session_id!r} was closed meanwhile")
            return view_of(self.sessions.fork(session))

    async def session(self, session_id: str, owner: str | None = None) -> SessionView:
        return view_of(await self._get(session_id, owner))

    async def close_session(self, session_id: str, owner: str | None = None) -> None:
        await self._get(session_id, owner)
        self.sessions.close(session_id, owner)

    async def end_model(self, name: str) -> None:
        self.sessions.end_model(name)
        self.modules.forget(name)
        self.catalog.forget_metrics(name)

    async def ready(self) -> tuple[bool, str]:
        return self.readiness

    async def is_loaded(self, spec: ModelSpec) -> bool:
        return self.modules.is_built(spec)

    async def load(self, spec: ModelSpec) -> None:
        await self.engine.warmup(spec)

    async def unload(self, spec: ModelSpec) -> bool:
        return await asyncio.to_thread(self.modules.unload, spec)

    async def seeded_weights(self, config: RNNConfig) -> bytes:
        return await asyncio.to_thread(seeded_weights, config)
