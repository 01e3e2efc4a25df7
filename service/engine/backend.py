"""The backend: what owns the device — the engine (batcher, worker thread, modules) and the
sessions whose state lives there. One per device, whatever number of processes serve HTTP.

`LocalBackend` runs in the process that serves HTTP (one front-end). With several front-end
processes, each talks to the one engine process through `service.engine.transport`, whose client
has this same interface, so the data plane above does not know which it has.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from service.engine.codec import WireTensor
from service.engine.engine import Engine
from service.engine.portable import SessionState
from service.engine.runner import ForwardResult
from service.engine.sessions import Session, SessionStore, snapshot
from service.engine.validate import ForwardJob
from service.errors import ModelConflict, ModelNotFound, SessionNotFound, StateMismatch
from service.registry import ModelSpec, Registry

if TYPE_CHECKING:
    from service.engine.handoff import Handoff

Expect = tuple[int, str] | None  # a chunk's expected start step and its digest


@dataclass(frozen=True)
class SessionView:
    """What a front-end sees of a session (its state stays on the device)."""

    id: str
    model: str
    steps: int
    batch_size: int | None  # None while unknown, or for unbatched chunks
    expires_at: float  # Unix seconds, if left idle

    @classmethod
    def of(cls, session: Session) -> SessionView:
        batch = session.batch if session.batched else None
        return cls(session.id, session.model, session.steps, batch, session.expires_at)


class Backend(Protocol):
    device: str  # the serving device's type ("cpu", "cuda"); known once ready

    async def forward(self, spec: ModelSpec, job: ForwardJob) -> ForwardResult:
        """Run a validated job; jobs with the same `spec.key` may share a forward."""
        ...

    async def chunk(
        self,
        session_id: str,
        spec: ModelSpec,
        job: ForwardJob,
        close: bool = False,
        owner: str | None = None,
        expect: Expect = None,
    ) -> tuple[ForwardResult, SessionView]:
        """Run a session's next chunk from its held state; `close` ends it afterwards. Every
        session call takes the caller's key id: another key's session is not found. `expect`:
        the step the chunk expects to start at, and its digest (exactly-once chunks)."""
        ...

    async def open_session(
        self,
        spec: ModelSpec,
        state0: Sequence[WireTensor | None],
        batch_size: int | None,
        session_id: str | None,
        replace: bool = False,
        owner: str | None = None,
    ) -> SessionView:
        """Open a session with an optional initial (h0, c0) and id (`replace`: restart it)."""
        ...

    async def import_session(
        self,
        spec: ModelSpec,
        state: SessionState,
        session_id: str | None = None,
        owner: str | None = None,
    ) -> SessionView:
        """Open a session that resumes an exported state (409 if made under other weights)."""
        ...

    async def export_state(self, session_id: str, owner: str | None = None) -> SessionState:
        """A copy of the session's state, tagged with its model, weights digest and step."""
        ...

    async def fork_session(self, session_id: str, owner: str | None = None) -> SessionView:
        """A new session with a copy of this one's state and step count."""
        ...

    async def session(self, session_id: str, owner: str | None = None) -> SessionView: ...

    async def close_session(self, session_id: str, owner: str | None = None) -> None: ...

    async def end_model(self, name: str) -> None:
        """End every session of a model (it was deleted)."""
        ...

    async def ready(self) -> tuple[bool, str]:
        """Whether the default model is warm, and if not, why."""
        ...

    async def is_loaded(self, spec: ModelSpec) -> bool:
        """Whether the model's module is built on the device now."""
        ...

    async def load(self, spec: ModelSpec) -> None:
        """Build the model's module on the device and run one tiny forward (warm it)."""
        ...

    async def unload(self, spec: ModelSpec) -> bool:
        """Drop the model's module from the device; False if it was not built."""
        ...


class LocalBackend:
    """The engine and the sessions in this process."""

    def __init__(self, engine: Engine, sessions: SessionStore, registry: Registry) -> None:
        self.engine = engine
        self.sessions = sessions
        self.registry = registry
        self.device = registry.device.type
        self.readiness: tuple[bool, str] = (False, "warming up the default model")
        self.handoff: Handoff | None = None  # set by the host when sessions can move
        self._digests: dict[tuple[str, object], str] = {}

    async def digest(self, spec: ModelSpec) -> str:
        """The model's weights digest (its config and weights file), once per version."""
        key = (spec.name, spec.version)
        found = self._digests.get(key)
        if found is None:
            found = await asyncio.to_thread(self.registry.weights_digest, spec)
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
            spec = self.registry.get(session.model)
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
            return ended.last.result, SessionView.of(ended)
        run = functools.partial(self.engine.forward, spec)
        result = await self.sessions.chunk(session, spec, job, run, expect)
        if close:
            self.sessions.close(session_id, owner, keep_last=True)
        return result, SessionView.of(session)

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
        return SessionView.of(session)

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
        return SessionView.of(session)

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
            return SessionView.of(self.sessions.fork(session))

    async def session(self, session_id: str, owner: str | None = None) -> SessionView:
        return SessionView.of(await self._get(session_id, owner))

    async def close_session(self, session_id: str, owner: str | None = None) -> None:
        await self._get(session_id, owner)
        self.sessions.close(session_id, owner)

    async def end_model(self, name: str) -> None:
        self.sessions.end_model(name)
        self.registry.forget_metrics(name)

    async def ready(self) -> tuple[bool, str]:
        return self.readiness

    async def is_loaded(self, spec: ModelSpec) -> bool:
        return self.registry.is_loaded(spec)

    async def load(self, spec: ModelSpec) -> None:
        await self.engine.warmup(spec)

    async def unload(self, spec: ModelSpec) -> bool:
        return await asyncio.to_thread(self.registry.unload, spec)
