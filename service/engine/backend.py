"""The backend: what owns the device — the engine (batcher, worker thread, modules) and the
sessions whose state lives there. One per device, whatever number of processes serve HTTP.

`LocalBackend` runs in the process that serves HTTP (one front-end). With several front-end
processes, each talks to the one engine process through `service.engine.remote`, whose client
has this same interface, so the data plane above does not know which it has.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from service.engine.codec import WireTensor
from service.engine.engine import Engine
from service.engine.runner import ForwardResult
from service.engine.sessions import Session, SessionStore
from service.engine.validate import ForwardJob
from service.registry import ModelSpec, Registry


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
    ) -> tuple[ForwardResult, SessionView]:
        """Run a session's next chunk from its held state; `close` ends it afterwards. Every
        session call takes the caller's key id: another key's session is not found."""
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


class LocalBackend:
    """The engine and the sessions in this process."""

    def __init__(self, engine: Engine, sessions: SessionStore, registry: Registry) -> None:
        self.engine = engine
        self.sessions = sessions
        self.registry = registry
        self.device = registry.device.type
        self.readiness: tuple[bool, str] = (False, "warming up the default model")

    async def forward(self, spec: ModelSpec, job: ForwardJob) -> ForwardResult:
        return await self.engine.forward(spec, job)

    async def chunk(
        self,
        session_id: str,
        spec: ModelSpec,
        job: ForwardJob,
        close: bool = False,
        owner: str | None = None,
    ) -> tuple[ForwardResult, SessionView]:
        session = self.sessions.get(session_id, owner)
        run = functools.partial(self.engine.forward, spec)
        result = await self.sessions.chunk(session, spec, job, run)
        if close:
            self.sessions.close(session_id)
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

    async def session(self, session_id: str, owner: str | None = None) -> SessionView:
        return SessionView.of(self.sessions.get(session_id, owner))

    async def close_session(self, session_id: str, owner: str | None = None) -> None:
        self.sessions.close(session_id, owner)

    async def end_model(self, name: str) -> None:
        self.sessions.end_model(name)

    async def ready(self) -> tuple[bool, str]:
        return self.readiness

    async def is_loaded(self, spec: ModelSpec) -> bool:
        return self.registry.is_loaded(spec)
