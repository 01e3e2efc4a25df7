"""Streaming sessions: the server holds each stream's hidden state, on the serving device.

A session belongs to one registered model and one version of its weights. Its chunks run one at
a time in arrival order (a FIFO lock per session), through the same batcher as every request, so
chunks of different sessions of one model share forwards (their states gathered on dim 1). The
state after a chunk is that chunk's h_n, kept on the device; feeding chunks therefore equals one
forward over their concatenation.

Lifecycle: idle sessions expire after `session_ttl_s`; at most `max_sessions` are open (429
past it). The bytes of all sessions' states together have a budget (`max_state_bytes`): when a
chunk (or an opening with an initial state) would pass it, the least recently used idle sessions
are ended (their next chunk gets 404) until it fits; a session whose state alone is over the
budget can never run and is refused with 413 (at its opening when its batch size is known), and
one that cannot fit because every other session is busy with 429. A session
ends when its model is deleted (404 afterwards), and when the model's weights are re-uploaded:
the next chunk is refused with 409 and the session is gone, since its state was computed with
weights that no longer exist.

Exactly-once chunks: a chunk may say the step it expects to start at (`expect`: that step and a
digest of its input). A chunk at the session's step runs, and its answer is kept; the same chunk
again (a retry whose first try was applied) gets that answer back and the state does not advance
twice; any other step is a 409 (`StepConflict`) carrying the session's current step. The kept
answer counts against the state budget. A session closed by its last chunk (an OIP
`sequence_end`) keeps that answer a while too, so a resend of the closing chunk gets it.

Session ids are per API key: the store keeps each session under (owner, id), so another key's
session is never found, taken or confirmed under this one's.

Portable state: `snapshot` (`service.sessions.session`) copies a session's state to the host
(for export and handoff); `open` takes one back (`steps` carried over); `fork` copies a
session, state and step, under a new id that starts with its root's id and a dot, so a load
balancer that hashes on the root sends the fork's chunks where its state is.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from service.catalog.spec import ModelSpec
from service.core.errors import (
    InvalidInput,
    ModelConflict,
    Overloaded,
    PayloadTooLarge,
    SessionNotFound,
    StepConflict,
    session_not_found,
)
from service.core.metrics import Metrics
from service.engine.job import ForwardJob, ForwardResult
from service.engine.tensor import WireTensor
from service.engine.validate import H0, check_state_dtypes, check_state_shapes, state_parts
from service.sessions.session import Durability, Ended, Key, Replay, Session, Stale, state_bytes


class SessionStore:
    def __init__(
        self,
        metrics: Metrics,
        ttl_s: float,
        max_sessions: int,
        max_state_bytes: int = 1 << 62,
        cache: bool = False,
    ) -> None:
        self._metrics = metrics
        # `cache`: a durable store (service.sessions.redis_store) holds every session; this one is
        # its cache on the device, and a session dropped for room is only reloaded later
        self.cache = cache
        # server-made ids start with this process's tag: with no durable store, an id of
        # another process's (one that restarted) is known to be lost, not unknown
        self.boot = secrets.token_urlsafe(6)
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self.max_state_bytes = max_state_bytes
        self._sessions: OrderedDict[Key, Session] = OrderedDict()  # least recently used first
        self._state_bytes = 0
        self._ended = Ended(max_sessions)  # sequences closed by their last chunk

    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    def made_elsewhere(self, session_id: str) -> bool:
        """An id this server's kind makes, but another process made (its sessions are gone)."""
        root = session_id.split(".", 1)[0]
        return len(root) == len(self.boot) + 22 and not root.startswith(self.boot)

    def count_replay(self) -> None:
        self._metrics.session_replays.inc()

    def evict(self, session: Session) -> None:
        """Drop a cached session (its durable copy is newer, or its commit's fate unknown)."""
        if self._sessions.get(session.key) is session:
            self._drop(session.key)

    def __len__(self) -> int:
        return len(self._sessions)

    def open(
        self,
        entry: ModelSpec,
        h0: WireTensor | None = None,
        c0: WireTensor | None = None,
        batch_size: int | None = None,
        key: str | None = None,
        replace: bool = False,
        owner: str | None = None,
        steps: int = 0,
    ) -> Session:
        """A new session. `key` picks the id (a client's X-Session-ID, or the OIP's sequence_id,
        which restarts the sequence: `replace`). `steps`: the steps an imported state has
        consumed already."""
        self.expire()
        if entry.config.bidirectional:
            raise InvalidInput.at(
                ("path", "name"),
                f"model {entry.name!r} is bidirectional and cannot stream: its reverse direction "
                "needs the whole sequence",
            )
        if key is not None and (owner, key) in self._sessions:
            if not replace:
                raise ModelConflict(f"session id {key!r} is taken")
            self._drop((owner, key))
        if key is not None:
            self._ended.forget((owner, key))
        if batch_size is not None:
            self._check_fits(state_bytes(entry.config, batch_size))
        self._make_room()
        session = Session(
            key or self.boot + secrets.token_urlsafe(16),
            entry.name,
            entry.version,
            self.ttl_s,
            owner=owner,
            steps=steps,
        )  # fmt: skip  (128 random bits)
        parts = state_parts(entry.config, h0, c0)
        if parts is not None:
            ndim = parts[0].ndim
            if ndim not in (2, 3) or any(p.ndim != ndim for p in parts):
                got = ", ".join(f"{p.ndim}-D" for p in parts)
                raise InvalidInput.at(
                    H0, f"expected 3-D (batched) or 2-D (unbatched) initial states, got {got}"
                )
            batched = ndim == 3
            batch = parts[0].shape[1] if batched else None
            check_state_dtypes(entry.config, parts)
            check_state_shapes(entry.config, parts, batch)
            if batch_size is not None and batched and batch != batch_size:
                raise InvalidInput.at(
                    ("body", "batch_size"),
                    f"h0 has {batch} sequences, batch_size says {batch_size}",
                )
            session.batched, session.batch, session.state0 = batched, batch or 1, parts
        elif batch_size is not None:
            session.batched, session.batch = True, batch_size
        if session.state0 is not None:  # held on the host until the first chunk
            self._reserve(session, sum(t.array.nbytes for t in session.state0))
        self._add(session)
        return session

    def _add(self, session: Session) -> None:
        self._sessions[session.key] = session
        self._metrics.open_sessions.set(len(self._sessions))

    def _make_room(self) -> None:
        """429 at `max_sessions` — unless this is a cache, which drops its least recently used
        idle session instead (the durable store keeps it, and bounds the count itself)."""
        if len(self._sessions) < self.max_sessions:
            return
        if self.cache:
            for other in list(self._sessions.values()):
                if not other.lock.locked():
                    self._drop(other.key)
                    return
        raise Overloaded(
            f"{self.max_sessions} sessions are open (RNN_SERVE_MAX_SESSIONS); close some"
        )

    def fork(self, source: Session) -> Session:
        """A new session with a copy of `source`'s state and step count (call between its
        chunks: with its lock held). Its id is `<root>.<random>`: the root's id first."""
        self.expire()
        self._make_room()
        root = source.id.split(".", 1)[0]
        fork = Session(
            f"{root}.{secrets.token_urlsafe(12)}", source.model, source.version, source.ttl,
            source.batched, source.batch, source.state0,
            None if source.state is None else tuple(p.clone() for p in source.state),
            source.steps, owner=source.owner,
        )  # fmt: skip
        self._reserve(fork, source.state_bytes)
        self._add(fork)
        return fork

    def get(self, session_id: str, owner: str | None = None) -> Session:
        """The session, if it is open and `owner`'s. Ids are per key: another key's session is
        not found under this one's (404, never 403 or 409), so its existence is never confirmed."""
        key = (owner, session_id)
        session = self._sessions.get(key)
        if session is not None and self._expired(session, time.monotonic()):
            self._drop(key)
            session = None
        if session is None:
            raise session_not_found(session_id)
        self._sessions.move_to_end(key)
        return session

    def get_held(self, session_id: str, owner: str | None = None) -> Session | None:
        """The session if this store holds it (no expiry check)."""
        return self._sessions.get((owner, session_id))

    def close(self, session_id: str, owner: str | None = None, keep_last: bool = False) -> None:
        """End a session. `keep_last`: keep its last chunk's answer for a resend of that chunk
        (a sequence ended by its last chunk)."""
        session = self.get(session_id, owner)
        self._drop(session.key)
        if keep_last and session.last is not None:
            self._ended.keep(session, session.last, self.max_state_bytes - self._state_bytes)

    def ended(self, session_id: str, owner: str | None, expect: tuple[int, str]) -> Session | None:
        """A session closed by its last chunk, if `expect` is that chunk again (a resend whose
        first answer was lost): its `last` holds the answer."""
        session = self._ended.find((owner, session_id))
        if session is None:
            return None
        last = session.last
        if last is None or (last.start, last.digest) != expect:
            return None
        self._metrics.session_replays.inc()
        return session

    def end_model(self, model: str) -> int:
        """End every session of a model (it was deleted)."""
        doomed = [s.key for s in self._sessions.values() if s.model == model]
        for key in doomed:
            self._drop(key)
        self._ended.end_model(model)
        return len(doomed)

    @staticmethod
    def _expired(session: Session, now: float) -> bool:
        return now - session.last_used > session.ttl and not session.lock.locked()

    def expire(self) -> None:
        now = time.monotonic()
        for key in [s.key for s in self._sessions.values() if self._expired(s, now)]:
            self._drop(key)
        self._ended.expire()

    def _drop(self, key: Key) -> Session | None:
        session = self._sessions.pop(key, None)
        if session is not None:
            self._state_bytes -= session.state_bytes
            self._metrics.open_sessions.set(len(self._sessions))
            self._metrics.session_state_bytes.set(self._state_bytes)
        return session

    def _reserve(self, session: Session, nbytes: int) -> None:
        """Count `nbytes` of state for `session`, ending least recently used idle sessions to
        make room; 429 if it cannot fit."""
        if nbytes == session.state_bytes:  # most chunks: the state's size does not change
            return
        budget = self.max_state_bytes
        self._check_fits(nbytes)
        growth = nbytes - session.state_bytes
        while self._ended.nbytes and self._state_bytes + self._ended.nbytes + growth > budget:
            self._ended.drop_oldest()  # kept answers of ended ones go first
        for other in list(self._sessions.values()):  # least recently used first
            if self._state_bytes + growth <= budget:
                break
            if other is not session and not other.lock.locked():
                self._drop(other.key)  # (a cache's: reloaded from the durable store later)
                self._metrics.session_evictions.inc()
        if self._state_bytes + growth > budget:
            raise Overloaded(
                f"sessions' states fill their budget of {budget} bytes "
                "(RNN_SERVE_MAX_SESSION_STATE_BYTES) and every other session is busy; retry later"
            )
        session.state_bytes = nbytes
        self._state_bytes += growth
        self._metrics.session_state_bytes.set(self._state_bytes)

    def _check_fits(self, nbytes: int) -> None:
        """413 for a state that could never fit the budget, even alone: no retry can help."""
        if nbytes > self.max_state_bytes:
            raise PayloadTooLarge(
                f"this session's state would take {nbytes} bytes, over the budget of "
                f"{self.max_state_bytes} for all sessions (RNN_SERVE_MAX_SESSION_STATE_BYTES): "
                "stream fewer sequences"
            )

    async def chunk(
        self,
        session: Session,
        current: ModelSpec,
        job: ForwardJob,
        run: Callable[[ForwardJob], Awaitable[ForwardResult]],
        *,
        expect: tuple[int, str] | None = None,
        durable: Durability | None = None,
    ) -> ForwardResult:
        """Run the next chunk with the session's state; chunks of one session never overlap.
        `expect`: the step the chunk expects to start at and its digest (exactly once).
        `durable`: the store this one caches. A kept answer is given only once the copy is
        known current; the stored session is held from expiring while the chunk runs; the new
        state commits before the answer. If the copy is stale or the commit fails, the session
        leaves this cache (its next chunk reloads what the store has): `Stale`."""
        async with session.lock:  # asyncio.Lock wakes waiters first come, first served
            if self._sessions.get(session.key) is not session:
                raise SessionNotFound(
                    f"session {session.id!r} was closed, or moved to another replica, meanwhile"
                )
            if current.version != session.version:
                self._drop(session.key)
                raise ModelConflict(
                    f"the weights of model {session.model!r} changed; session {session.id!r} "
                    "was ended, open a new one"
                )
            if expect is not None and expect[0] != session.steps:
                last = session.last
                if last is not None and (last.start, last.digest) == expect:
                    if durable is not None and not await durable.current(session):
                        self._drop(session.key)
                        raise Stale(session.id)
                    session.last_used = time.monotonic()
                    self._metrics.session_replays.inc()
                    return last.result  # a retry of the chunk just applied: its answer again
                start, now = expect[0], session.steps
                why = (
                    "chunks before it are missing"
                    if start > now
                    else "it was applied already (a retry with another body?) or is out of order"
                )
                raise StepConflict(
                    f"session {session.id!r} is at step {now}; this chunk expects to start at "
                    f"step {start}: {why}. Send the chunk that starts at step {now}",
                    now,
                )
            if session.batched is not None and (job.batched, job.batch) != (
                session.batched,
                session.batch,
            ):
                form = (
                    f"batches of {session.batch}" if session.batched else "unbatched (2-D) chunks"
                )
                got = f"a batch of {job.batch}" if job.batched else "an unbatched chunk"
                raise InvalidInput.at(("body", "input"), f"this session streams {form}, got {got}")
            session.batched, session.batch = job.batched, job.batch
            # the new state, and the kept answer it holds until this chunk replaces it
            size = state_bytes(current.config, job.batch)
            if session.last is not None and size + session.last.nbytes > self.max_state_bytes:
                session.last = None  # the new state fits the budget only without it
            self._reserve(session, size + (0 if session.last is None else session.last.nbytes))
            if durable is not None and not await durable.hold(session):
                self._drop(session.key)
                raise Stale(session.id)
            started = time.perf_counter()
            # (built directly: dataclasses.replace costs ~5 µs of the event loop per chunk)
            job = ForwardJob(
                job.input, session.initial_state, job.lengths, job.batched, job.seq_len,
                job.batch, session.state, True,
            )  # fmt: skip
            result = await run(job)
            from_step = session.steps
            session.state = result.state
            session.steps += job.seq_len
            session.last_used = time.monotonic()
            if session.last is not None and expect is None:
                session.last = None
                self._reserve(session, size)
            if expect is not None:
                kept = ForwardResult(
                    result.output, result.h_n, result.c_n, head=result.head
                )  # host only
                replay = Replay(expect[0], expect[1], kept)
                try:
                    self._reserve(session, size + replay.nbytes)
                    session.last = replay
                except Overloaded:  # no room to keep it: a retry learns the step, not the answer
                    pass
            if durable is not None:
                try:
                    await durable.commit(session, from_step, result)
                except BaseException:
                    self.evict(session)
                    raise
            self._metrics.session_chunk_seconds.observe(time.perf_counter() - started)
            return result

    async def sweep(self, every_s: float) -> None:
        """Background task: drop expired sessions even when nobody asks."""
        while True:
            await asyncio.sleep(every_s)
            self.expire()
