"""The sessions' door: what the routes ask of streaming sessions besides their chunks (which
run through the data plane like every forward). Every call takes the caller's key id: another
key's session is not found."""

from __future__ import annotations

from service.engine.backend import Backend, SessionView
from service.engine.state import SessionState


class SessionExtension:
    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    async def info(self, session_id: str, owner: str | None) -> SessionView:
        return await self._backend.session(session_id, owner)

    async def close(self, session_id: str, owner: str | None) -> None:
        await self._backend.close_session(session_id, owner)

    async def export(self, session_id: str, owner: str | None) -> SessionState:
        return await self._backend.export_state(session_id, owner)

    async def fork(self, session_id: str, owner: str | None) -> SessionView:
        return await self._backend.fork_session(session_id, owner)
