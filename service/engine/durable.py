"""Sessions in Redis (or Valkey): the durable store behind the engine's session cache.

With `RNN_SERVE_SESSION_STORE=redis://...`, every session is a Redis hash (its key a digest of
the API key and the session id: ids are per key, and nothing in Redis names the key):
- `step`: the time steps the session has consumed, the version every commit is conditional on;
- `blob`: the session's state as a safetensors file (`service.engine.state`), tagged with its
  model, weights digest, step, owner, time-to-live and the kept answer of its last exactly-once
  chunk;
- `ended`: set when a sequence was closed by its last chunk (only a resend of that chunk may
  read it).

A chunk's new state commits before its answer is sent, atomically and only from the step the
chunk started at (a Lua script), so two replicas can never both advance a session from one step.
The commits of one batched forward go to Redis in one round trip (a pipeline). Expiry is Redis's
(every commit sets the key's time-to-live); an index (a sorted set of keys by expiry) bounds how
many sessions all replicas hold together (`RNN_SERVE_MAX_SESSIONS`).

Redis unreachable or failing over: every call raises `SessionStoreUnavailable` (503 with
Retry-After); a commit whose outcome is unknown leaves the cache of that session dropped, so the
next chunk reads what Redis holds — never a state Redis does not have.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from service.engine.job import ForwardResult
from service.engine.session import Replay, Session
from service.engine.state import SessionState, from_safetensors, to_safetensors
from service.errors import (
    ModelConflict,
    Overloaded,
    ServiceError,
    SessionStoreUnavailable,
    StateMismatch,
)
from service.metrics import Metrics

log = logging.getLogger("rnn_serve.sessions")
T = TypeVar("T")
PREFIX = "rnn-serve:"

# KEYS: session, index. ARGV: blob, step, ttl ms, max sessions, replace ("1"), index member.
_CREATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local exists = redis.call('EXISTS', KEYS[1]) == 1
local ended = redis.call('HGET', KEYS[1], 'ended') == '1'
if exists and not ended and ARGV[5] ~= '1' then return 'taken' end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if (not exists or ended) and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then
  return 'full'
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'step', ARGV[2], 'blob', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[6])
return 'ok'
"""

# KEYS: session, index. ARGV: from step, new step, blob, ttl ms, index member, ended ("1").
# Returns {1, new step} when committed, {0, current step} when the session moved on meanwhile,
# {0, -1} when it is gone (closed, expired, ended).
_COMMIT = """
local cur = redis.call('HGET', KEYS[1], 'step')
if not cur or redis.call('HGET', KEYS[1], 'ended') == '1' then return {0, -1} end
if cur ~= ARGV[1] then return {0, tonumber(cur)} end
redis.call('HSET', KEYS[1], 'step', ARGV[2], 'blob', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if ARGV[6] == '1' then
  redis.call('HSET', KEYS[1], 'ended', '1')
  redis.call('ZREM', KEYS[2], ARGV[5])
else
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[5])
end
return {1, tonumber(ARGV[2])}
"""


class Conflict(Exception):
    """The session is not at the step a commit started from: `current` (-1: it is gone)."""

    def __init__(self, current: int) -> None:
        super().__init__(current)
        self.current = current


@dataclass(frozen=True)
class Stored:
    """A session as Redis holds it."""

    state: SessionState
    ttl: float
    remaining_s: float  # until it expires
    last: Replay | None
    ended: bool


def member(session_id: str, owner: str | None) -> str:
    """A session's name in Redis: ids are per API key, as in the cache."""
    return hashlib.sha256(f"{owner or ''}\n{session_id}".encode()).hexdigest()[:40]


def encode(session: Session, state: SessionState) -> bytes:
    """The session's state with what resuming it needs: its id, owner, time-to-live and kept
    answer."""
    tags = {"id": session.id, "owner": session.owner or "", "ttl": repr(session.ttl)}
    extra: dict[str, np.ndarray[Any, Any]] = {}
    if session.last is not None:
        r = session.last.result
        tags.update(last_start=str(session.last.start), last_digest=session.last.digest)
        extra = {"last.output": r.output, "last.h_n": r.h_n}
        if r.c_n is not None:
            extra["last.c_n"] = r.c_n
    return to_safetensors(state, tags, extra)


def decode(data: bytes, session_id: str, owner: str | None, pttl_ms: int, ended: bool) -> Stored:
    state, tags, extra = from_safetensors(data, ("session_store",))
    if tags.get("id") != session_id or tags.get("owner", "") != (owner or ""):
        raise ValueError("a stored state of another session (a digest collision?)")
    last = None
    if "last_start" in tags and "last.output" in extra:
        result = ForwardResult(extra["last.output"], extra["last.h_n"], extra.get("last.c_n"))
        last = Replay(int(tags["last_start"]), tags["last_digest"], result)
    ttl = float(tags.get("ttl", "0"))
    return Stored(state, ttl, max(0.0, pttl_ms / 1000), last, ended)


def _password(path: Path | None) -> str | None:
    return None if path is None else path.read_text().strip()


class RedisSessions:
    def __init__(
        self,
        url: str,
        metrics: Metrics,
        max_sessions: int,
        timeout_s: float = 2.0,
        password_file: Path | None = None,
    ) -> None:
        import redis.asyncio as aioredis  # only where Redis is configured
        from redis.exceptions import NoScriptError, RedisError

        self._failures = (RedisError, OSError)  # what a call to Redis may raise: 503
        self._no_script = NoScriptError

        options: dict[str, Any] = {
            "socket_timeout": timeout_s,
            "socket_connect_timeout": timeout_s,
            "health_check_interval": 10,
        }
        password = _password(password_file)
        if password is not None:
            options["password"] = password
        self.url = url
        self._client = aioredis.Redis.from_url(url, **options)
        self._metrics = metrics
        self.max_sessions = max_sessions
        self._index = f"{PREFIX}index"
        self._create = self._client.register_script(_CREATE)
        self._commit = self._client.register_script(_COMMIT)
        self._pending: list[tuple[list[str], list[Any], asyncio.Future[Any]]] = []
        self.healthy: tuple[bool, str] = (False, "the session store has not answered yet")

    def _key(self, name: str) -> str:
        return f"{PREFIX}s:{name}"

    async def _timed(self, op: str, call: Callable[[], Awaitable[T]]) -> T:
        started = time.perf_counter()
        try:
            result = await call()
        except self._failures as exc:
            self._metrics.session_store_errors.labels(op).inc()
            self.healthy = (False, f"the session store does not answer: {exc}")
            raise SessionStoreUnavailable(
                f"the session store (Redis) cannot be reached ({type(exc).__name__}); retry",
                retry_after=1,
            ) from None
        self._metrics.session_store_seconds.labels(op).observe(time.perf_counter() - started)
        return result

    async def ping(self) -> None:
        await self._timed("ping", self._client.ping)
        self.healthy = (True, "ready")

    async def create(self, session: Session, blob: bytes, replace: bool = False) -> None:
        """Store a new session (or, `replace`, restart one); ModelConflict if its id is taken,
        Overloaded past `max_sessions` across every replica."""
        name = member(session.id, session.owner)
        keys = [self._key(name), self._index]
        args: list[bytes | str | int] = [
            blob, session.steps, int(session.ttl * 1000), self.max_sessions,
            "1" if replace else "0", name,
        ]  # fmt: skip
        outcome = await self._timed("create", lambda: self._create(keys=keys, args=args))
        if outcome == b"taken":
            raise ModelConflict(f"session id {session.id!r} is taken")
        if outcome == b"full":
            raise Overloaded(
                f"{self.max_sessions} sessions are open across every replica "
                "(RNN_SERVE_MAX_SESSIONS); close some"
            )

    async def commit(
        self, session: Session, from_step: int, blob: bytes, ended: bool = False
    ) -> None:
        """Advance the stored session from `from_step` to `session.steps`; Conflict if it is
        not at `from_step`. Commits made in one turn of the event loop (the chunks of one
        batched forward) share one round trip."""
        name = member(session.id, session.owner)
        keys = [self._key(name), self._index]
        args = [from_step, session.steps, blob, int(session.ttl * 1000), name,
                "1" if ended else "0"]  # fmt: skip
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((keys, args, future))
        if len(self._pending) == 1:
            loop.call_soon(self._flush)
        done, current = await future
        if not done:
            self._metrics.session_store_conflicts.inc()
            raise Conflict(int(current))
        self._metrics.session_store_commits.inc()

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.ensure_future(self._send(batch))
        task.add_done_callback(lambda t: t.exception())  # every outcome is in the futures

    async def _send(self, batch: list[tuple[list[str], list[Any], asyncio.Future[Any]]]) -> None:
        async def run() -> list[Any]:
            # EVALSHA straight into the pipeline: a Script object in a pipeline would cost a
            # SCRIPT EXISTS round trip before every batch. Redis forgot the script (a restart,
            # a failover): load it, and send the batch again.
            for attempt in range(2):
                async with self._client.pipeline(transaction=False) as pipe:
                    for keys, args, _ in batch:
                        pipe.evalsha(self._commit.sha, len(keys), *keys, *args)
                    results: list[Any] = await pipe.execute(raise_on_error=False)
                if attempt == 0 and any(isinstance(r, self._no_script) for r in results):
                    await self._client.script_load(_COMMIT)
                    continue
                for result in results:
                    if isinstance(result, Exception):
                        raise result
                return results
            raise AssertionError("unreachable")

        try:
            results = await self._timed("commit", run)
        except BaseException as exc:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            raise
        self._metrics.session_store_pipeline.observe(len(batch))
        for (_, _, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def load(self, session_id: str, owner: str | None) -> Stored | None:
        """The session as Redis holds it; None if it holds none (unknown, closed, expired)."""
        key = self._key(member(session_id, owner))

        async def read() -> list[Any]:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.hgetall(key)
                pipe.pttl(key)
                results: list[Any] = await pipe.execute()
                return results

        fields, pttl = await self._timed("load", read)
        if not fields or b"blob" not in fields:
            return None
        self._metrics.session_cache_misses.inc()
        try:
            return decode(fields[b"blob"], session_id, owner, int(pttl), b"ended" in fields)
        except (ValueError, ServiceError) as exc:
            log.warning("session store: an unreadable state for a session: %s", exc)
            raise StateMismatch(
                f"the stored state of session {session_id!r} cannot be read (written by another "
                "version, or damaged); open a new session"
            ) from None

    async def step(self, session_id: str, owner: str | None) -> int | None:
        """The stored session's step (None if none, or ended): is a cached copy current?"""
        key = self._key(member(session_id, owner))

        async def read() -> list[Any]:
            results: list[Any] = await self._client.hmget(key, ["step", "ended"])
            return results

        step, ended = await self._timed("step", read)
        return None if step is None or ended is not None else int(step)

    async def delete(self, session_id: str, owner: str | None) -> None:
        name = member(session_id, owner)

        async def remove() -> None:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.delete(self._key(name))
                pipe.zrem(self._index, name)
                await pipe.execute()

        await self._timed("delete", remove)

    async def watch(self, every_s: float = 1.0) -> None:
        """Background task: keep `healthy` (readiness) current."""
        while True:
            with contextlib.suppress(SessionStoreUnavailable):
                await self.ping()
            await asyncio.sleep(every_s)

    async def close(self) -> None:
        await self._client.aclose()
