"""The sessions as this replica holds them: the store on the device, read through to the
durable store when there is one (Redis, `service.sessions.redis_store`).

Without a durable store, the device's store is the sessions. With one, it is a cache of it: a
session not cached here — opened by another replica, cached by one that restarted, or dropped for
room — is read from Redis; a copy that is behind, or of another opening of its id, is read again;
every chunk's new state commits to Redis before its answer; a chunk whose commit met a newer step
is judged again on the stored session (the retry policy, said once, here). A session whose model
was deleted ends (`model_deleted`); one whose model's weights changed is refused.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

from service.catalog.catalog import Catalog
from service.catalog.spec import ModelSpec
from service.core.errors import (
    InvalidInput,
    ModelConflict,
    ModelNotFound,
    SessionLost,
    SessionNotFound,
    StateMismatch,
    StepConflict,
    model_deleted,
    session_not_found,
)
from service.engine.backend import Expect, SessionView
from service.engine.job import ForwardJob, ForwardResult
from service.engine.state import SessionState
from service.engine.tensor import WireTensor
from service.sessions.memory import SessionStore
from service.sessions.redis_store import Conflict, RedisSessions, Stored, damaged, encode
from service.sessions.session import Durability, Session, Stale, snapshot

# A chunk whose commit met a newer step (another replica's chunk) runs again from that step, at
# most this many times (a chunk with a start_step gets its 409 at once instead).
_RETRIES = 3
Run = Callable[[ForwardJob], Awaitable[ForwardResult]]


def view_of(session: Session) -> SessionView:
    batch = session.batch if session.batched else None
    return SessionView(session.id, session.model, session.steps, batch, session.expires_at)


class Sessions:
    """This replica's sessions: `store` on the device, read through to `durable` if any."""

    def __init__(
        self, store: SessionStore, catalog: Catalog, durable: RedisSessions | None = None
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.durable = durable
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

    # --- sessions: the cache and the durable store ----------------------------------------------
    async def _get(self, session_id: str, owner: str | None, fresh: bool = False) -> Session:
        """The session: cached here, or read from the durable store. `fresh`: make sure the
        cached copy is at the stored step (for reads: export, fork, info)."""
        try:
            session = self.store.get(session_id, owner)
        except SessionNotFound:
            if self.durable is None:
                if self.store.made_elsewhere(session_id):
                    raise SessionLost(
                        f"session {session_id!r} was lost: the process that held it restarted "
                        "(sessions are kept in memory, RNN_SERVE_SESSION_STORE=memory). Resume "
                        "from a state you exported (GET /v1/sessions/{id}/state): open a new "
                        'session with it as "state" (POST /v1/models/{name}/sessions)'
                    ) from None
                raise
            return await self._load(session_id, owner)
        if fresh and self.durable is not None:
            async with session.lock:
                current = await self.durable.current(session)
            if not current:  # behind, closed, or another opening of the id: read it again
                self.store.evict(session)
                return await self._load(session_id, owner)
        return session

    async def _load(self, session_id: str, owner: str | None) -> Session:
        assert self.durable is not None
        stored = await self.durable.load(session_id, owner)
        if stored is None or stored.ended:
            raise session_not_found(session_id)
        spec = await self._current_spec(session_id, owner, stored)
        return self._adopt(spec, stored, session_id, owner)

    async def _current_spec(self, session_id: str, owner: str | None, stored: Stored) -> ModelSpec:
        """The model a stored session's state was made under, if it still has those weights."""
        assert self.durable is not None
        try:
            spec = self.catalog.get(stored.state.model)
        except ModelNotFound:
            await self.durable.delete(session_id, owner)
            raise model_deleted(session_id, stored.state.model) from None
        if await self.digest(spec) != stored.state.weights_digest:
            await self.durable.delete(session_id, owner)
            raise ModelConflict(
                f"the weights of model {stored.state.model!r} changed; session {session_id!r} "
                "was ended, open a new one"
            )
        return spec

    def _adopt(
        self, spec: ModelSpec, stored: Stored, session_id: str, owner: str | None
    ) -> Session:
        state = stored.state
        try:
            session = self.store.open(
                spec, *state.initial_state(), state.batch if state.batched else None,
                key=session_id, replace=True, owner=owner, steps=state.steps,
            )  # fmt: skip
        except InvalidInput:  # a stored state that does not fit its model: the store's damage
            raise damaged(session_id) from None
        session.epoch = stored.epoch
        if state.batched is False:
            session.batched, session.batch = False, 1
        session.ttl = stored.ttl or session.ttl
        session.last_used = time.monotonic() - max(0.0, session.ttl - stored.remaining_s)
        session.last = stored.last
        return session

    async def _stored_state(self, session: Session, spec: ModelSpec) -> bytes:
        return encode(session, snapshot(session, spec, await self.digest(spec)))

    def _committer(self, spec: ModelSpec, digest: str, close: bool) -> Durability:
        assert self.durable is not None
        return _Committer(self.durable, spec, digest, close)

    async def _spec_of(self, session: Session) -> ModelSpec:
        try:
            spec = self.catalog.get(session.model)
        except ModelNotFound:
            self.store.end_model(session.model)
            if self.durable is not None:
                await self.durable.delete(session.id, session.owner)
            raise model_deleted(session.id, session.model) from None
        if spec.version != session.version:
            raise ModelConflict(
                f"the weights of model {session.model!r} changed; session {session.id!r} "
                "ends at its next chunk: open a new one"
            )
        return spec

    async def chunk(
        self,
        session_id: str,
        spec: ModelSpec,
        job: ForwardJob,
        run: Run,
        *,
        close: bool = False,
        owner: str | None = None,
        expect: Expect = None,
    ) -> tuple[ForwardResult, SessionView]:
        """The session's next chunk, `run` on the engine from its held state."""
        commit = None
        if self.durable is not None:
            commit = self._committer(spec, await self.digest(spec), close)
        reread = False
        at = None  # the stored step the last refused commit met
        for _ in range(_RETRIES):
            try:
                session = await self._get(session_id, owner)
            except SessionNotFound:
                ended = await self._ended(session_id, owner, expect) if close else None
                if ended is None:
                    raise
                return ended
            if session.model != spec.name:  # the id was opened anew, for another model
                raise ModelConflict(
                    f"session {session_id!r} was opened again, for model {session.model!r}, "
                    f"while this chunk for {spec.name!r} was on its way; send it again"
                )
            try:
                result = await self.store.chunk(
                    session, spec, job, run, expect=expect, durable=commit
                )
            except Stale as exc:  # another replica's chunk, close or opening came first: read
                # the stored session, and judge the chunk again on it
                if isinstance(exc, Conflict) and exc.current >= 0:
                    at = exc.current
                reread = True
                continue
            except StepConflict:
                if self.durable is None or reread:
                    raise
                # judged on a cached copy that may be behind the store: judge it on the store's
                self.store.evict(session)
                reread = True
                continue
            if close:
                self.store.close(session_id, owner, keep_last=True)
            return result, view_of(session)
        raise StepConflict(
            f"session {session_id!r} moved on under this chunk {_RETRIES} times (other "
            "replicas' chunks of it); send it again",
            session.steps if at is None else at,
        )

    async def _ended(
        self, session_id: str, owner: str | None, expect: Expect
    ) -> tuple[ForwardResult, SessionView] | None:
        """A resend of the chunk that closed a sequence (its answer was lost): that answer."""
        if expect is None:
            return None
        ended = self.store.ended(session_id, owner, expect)
        if ended is not None and ended.last is not None:
            return ended.last.result, view_of(ended)
        if self.durable is None:
            return None
        stored = await self.durable.load(session_id, owner)
        last = None if stored is None or not stored.ended else stored.last
        if last is None or (last.start, last.digest) != expect:
            return None
        self.store.count_replay()
        state = stored.state  # type: ignore[union-attr]
        batch = state.batch if state.batched else None
        return last.result, SessionView(session_id, state.model, state.steps, batch, time.time())

    async def open(
        self,
        spec: ModelSpec,
        state0: Sequence[WireTensor | None],
        *,
        batch_size: int | None = None,
        session_id: str | None = None,
        replace: bool = False,
        owner: str | None = None,
    ) -> SessionView:
        h0, c0 = (*state0, None, None)[:2]
        session = self.store.open(
            spec, h0, c0, batch_size, key=session_id,
            replace=replace or self.durable is not None, owner=owner,
        )  # fmt: skip
        await self._store_new(session, spec, replace)
        return view_of(session)

    async def _store_new(self, session: Session, spec: ModelSpec, replace: bool) -> None:
        """A new session (opened, imported or forked) goes to the durable store first."""
        if self.durable is None:
            return
        try:
            await self.durable.create(session, await self._stored_state(session, spec), replace)
        except BaseException:
            self.store.evict(session)
            raise

    async def import_state(
        self,
        spec: ModelSpec,
        state: SessionState,
        *,
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
        session = self.store.open(
            spec, h0, c0, state.batch if state.batched else None, key=session_id, owner=owner,
            steps=state.steps, replace=self.durable is not None,
        )  # fmt: skip
        await self._store_new(session, spec, replace=False)
        return view_of(session)

    async def export(self, session_id: str, owner: str | None = None) -> SessionState:
        session = await self._get(session_id, owner, fresh=True)
        spec = await self._spec_of(session)
        digest = await self.digest(spec)
        async with session.lock:  # between chunks
            return snapshot(session, spec, digest)

    async def fork(self, session_id: str, owner: str | None = None) -> SessionView:
        session = await self._get(session_id, owner, fresh=True)
        spec = await self._spec_of(session)
        async with session.lock:
            if self.store.get_held(session_id, owner) is not session:
                raise SessionNotFound(f"session {session_id!r} was closed meanwhile")
            fork = self.store.fork(session)
        await self._store_new(fork, spec, replace=False)
        return view_of(fork)

    async def view(
        self, session_id: str, owner: str | None = None, fresh: bool = True
    ) -> SessionView:
        return view_of(await self._get(session_id, owner, fresh=fresh))

    async def close(self, session_id: str, owner: str | None = None) -> None:
        if self.durable is None:
            await self._get(session_id, owner)
            self.store.close(session_id, owner)
            return
        # straight to the store, whatever its stored state holds (a damaged one too)
        found = await self.durable.delete(session_id, owner)
        cached = self.store.get_held(session_id, owner)
        if cached is not None:
            self.store.evict(cached)
        if not found:
            raise session_not_found(session_id)

    def end_model(self, name: str) -> None:
        """A model was deleted: its sessions end here (in a durable store, each ends as it is
        next read: the model is gone)."""
        self.store.end_model(name)

    def health(self, readiness: tuple[bool, str]) -> tuple[bool, str]:
        """Readiness, and the durable store's when there is one."""
        if readiness[0] and self.durable is not None and not self.durable.healthy[0]:
            return self.durable.healthy
        return readiness


class _Committer:
    """The durable store around one chunk of a model (`Durability`)."""

    __slots__ = ("_close", "_config", "_digest", "_durable")

    def __init__(self, durable: RedisSessions, spec: ModelSpec, digest: str, close: bool) -> None:
        self._durable, self._config, self._digest, self._close = durable, spec.config, digest, close

    async def current(self, session: Session) -> bool:
        return await self._durable.current(session)

    async def hold(self, session: Session) -> bool:
        return await self._durable.hold(session)

    async def commit(self, session: Session, from_step: int, result: ForwardResult) -> None:
        config = self._config
        parts = (result.h_n,) if result.c_n is None else (result.h_n, result.c_n)
        state = SessionState(
            session.model, self._digest, config.mode, config.dtype, session.steps, parts,
            session.batched, session.batch if session.batched else None,
        )  # fmt: skip
        await self._durable.commit(session, from_step, encode(session, state), ended=self._close)
