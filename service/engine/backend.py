"""The backend: what owns the device — the engine (batcher, worker thread, modules) and the
sessions whose state lives there. One per device, whatever number of processes serve HTTP.

`Backend` is the interface the data plane calls; this module is torch-free. `LocalBackend`
(`service.runtime.local`) runs the engine in this process (one front-end). With several front-end
processes, each talks to the one engine process through `service.runtime.transport`, whose client
has this same interface, so the data plane above does not know which it has.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from service.catalog.spec import ModelSpec
from service.core.schemas.config import RNNConfig
from service.engine.job import ForwardJob, ForwardResult
from service.engine.state import SessionState
from service.engine.tensor import WireTensor

Expect = tuple[int, str] | None  # a chunk's expected start step and its digest


@dataclass(frozen=True)
class SessionView:
    """What a front-end sees of a session (its state stays on the device)."""

    id: str
    model: str
    steps: int
    batch_size: int | None  # None while unknown, or for unbatched chunks
    expires_at: float  # Unix seconds, if left idle


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
        *,
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
        *,
        batch_size: int | None = None,
        session_id: str | None = None,
        replace: bool = False,
        owner: str | None = None,
    ) -> SessionView:
        """Open a session with an optional initial (h0, c0) and id (`replace`: restart it)."""
        ...

    async def import_session(
        self,
        spec: ModelSpec,
        state: SessionState,
        *,
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

    async def session(
        self, session_id: str, owner: str | None = None, fresh: bool = True
    ) -> SessionView:
        """The session as it stands. `fresh=False`: as this replica knows it, without asking the
        session store whether it moved on (enough to learn its model)."""
        ...

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

    async def seeded_weights(self, config: RNNConfig) -> bytes:
        """The weights a model registered without trained ones holds (a safetensors file):
        drawn by torch, so by the engine."""
        ...
