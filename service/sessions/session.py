"""A streaming session's values: the `Session` the store keeps, the `Replay` of its last
exactly-once chunk, and `snapshot`, its state copied to the host as a `SessionState` (for export,
and for any store outside this process). The rules they follow are the store's
(`service.sessions.memory`)."""

from __future__ import annotations

import asyncio
import functools
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from service.catalog.spec import ModelSpec
from service.catalog.storage import Version
from service.core.schemas.config import RNNConfig
from service.engine.job import ForwardResult, State
from service.engine.runner import to_numpy
from service.engine.state import SessionState
from service.engine.tensor import CARRIER, WireTensor

Key = tuple[str | None, str]  # (owner, id): a session's place in the store


def new_epoch() -> str:
    """A session's opening: made anew by every open, import, fork and sequence restart."""
    return secrets.token_hex(8)


class Stale(Exception):
    """A cached copy of a session is not the stored session (another replica moved it on,
    closed it, or opened it anew under the same id): read the stored one, never answer from
    the copy."""


@dataclass(frozen=True)
class Replay:
    """The last chunk applied with an expected step: what a retry of it gets back."""

    start: int  # the step it started at
    digest: str  # of its input and lengths
    result: ForwardResult  # its answer (host arrays only)

    @property
    def nbytes(self) -> int:
        r = self.result
        extra = sum(a.nbytes for a in (r.c_n, r.head) if a is not None)
        return r.output.nbytes + r.h_n.nbytes + extra


@dataclass(eq=False)
class Session:
    id: str
    model: str
    version: Version | None  # of the model's files when the session opened
    ttl: float
    batched: bool | None = None  # the chunks' form, fixed by h0, batch_size or the first chunk
    batch: int | None = None
    # the first chunk's initial state, if the client gave one: (h0,) or, for LSTM, (h0, c0)
    state0: tuple[WireTensor, ...] | None = None
    state: State | None = None  # the state after the last chunk, on the serving device
    steps: int = 0
    created: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    state_bytes: int = 0  # what its state takes (counted against the store's budget)
    owner: str | None = None  # the API key that opened it (None: the server has no keys)
    last: Replay | None = None  # the last chunk sent with an expected step, for its retries
    # which opening of this id it is: a copy of another opening (an id closed and opened again,
    # an OIP sequence restarted) is stale even at the same step
    epoch: str = field(default_factory=new_epoch)

    @property
    def key(self) -> Key:
        """Where the store keeps it: ids are per API key (another key's id is another session)."""
        return (self.owner, self.id)

    @property
    def initial_state(self) -> tuple[WireTensor, ...] | None:
        """The state the next chunk starts from when none is held yet (the first chunk)."""
        return self.state0 if self.state is None else None

    @property
    def expires_at(self) -> float:
        """Wall-clock time (Unix seconds) after which an idle session is dropped."""
        return time.time() + self.ttl - (time.monotonic() - self.last_used)


@functools.lru_cache(maxsize=4096)
def state_bytes(config: RNNConfig, batch: int) -> int:
    """Bytes of a session's state for `batch` sequences: every part (h, and c for LSTM)."""
    itemsize = CARRIER[config.dtype].itemsize
    return config.state_rows * batch * sum(config.state_sizes) * itemsize


def snapshot(session: Session, entry: ModelSpec, digest: str) -> SessionState:
    """The session's state copied to the host (call with its lock held, or between chunks)."""
    if session.state is not None:
        parts = tuple(to_numpy(p) for p in session.state)
    elif session.state0 is not None:
        parts = tuple(np.array(t.array) for t in session.state0)
    else:
        parts = ()
    config = entry.config
    return SessionState(
        session.model, digest, config.mode, config.dtype, session.steps, parts,
        session.batched, session.batch if session.batched else None,
    )  # fmt: skip


class Ended:
    """Sessions closed by their last chunk (an OIP sequence_end) that kept that chunk's answer:
    a resend of it, whose first answer was lost, gets the answer again. Each is kept as long as
    an idle session lives, at most `limit` of them; their bytes count in the store's state
    budget, and they are the first dropped to make room."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._kept: OrderedDict[Key, tuple[Session, float]] = OrderedDict()
        self.nbytes = 0

    def keep(self, session: Session, last: Replay, room: int) -> None:
        """Keep `session` with only `last`, if it fits in `room` bytes (else a resend learns
        that the sequence is closed, not its answer)."""
        self.expire()
        if self.nbytes + last.nbytes > room:
            return
        while len(self._kept) >= self.limit:
            self.drop_oldest()
        session.state = session.state0 = None  # only the kept answer stays
        self._kept[session.key] = (session, time.monotonic() + session.ttl)
        self.nbytes += last.nbytes

    def find(self, key: Key) -> Session | None:
        self.expire()
        entry = self._kept.get(key)
        return None if entry is None else entry[0]

    def forget(self, key: Key) -> None:
        entry = self._kept.pop(key, None)
        if entry is not None and entry[0].last is not None:
            self.nbytes -= entry[0].last.nbytes

    def drop_oldest(self) -> None:
        if self._kept:
            self.forget(next(iter(self._kept)))

    def expire(self) -> None:
        now = time.monotonic()
        while self._kept:
            key, (_, until) = next(iter(self._kept.items()))
            if until > now:
                break
            self.forget(key)

    def end_model(self, model: str) -> None:
        for key in [s.key for s, _ in self._kept.values() if s.model == model]:
            self.forget(key)


class Durability(Protocol):
    """What a durable store (`service.sessions.redis_store`) does around a chunk of its cache's."""

    async def current(self, session: Session) -> bool:
        """Whether the cached copy is the stored session (its step and its opening)."""
        ...

    async def hold(self, session: Session) -> bool:
        """Keep the stored session from expiring while the chunk runs; False if it is gone."""
        ...

    async def commit(self, session: Session, from_step: int, result: ForwardResult) -> None:
        """Make the chunk's new state durable (from `from_step`); `Stale` if it moved on."""
        ...
