"""Sessions in Redis (or Valkey): the durable store behind the engine's session cache.

With `RNN_SERVE_SESSION_STORE=redis://...`, every session is a Redis hash (its key a digest of
the API key and the session id: ids are per key, and nothing in Redis names the key):
- `step`: the time steps the session has consumed, the version every commit is conditional on;
- `epoch`: which opening of the id it is (made anew by every open, import, fork and OIP
  `sequence_start`): a commit is conditional on it too, and a cached copy of another opening
  is stale even at the same step (Triton clients reuse small sequence ids all the time);
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
Retry-After); a commit whose outcome is unknown says so, and leaves the cache of that session
dropped, so the next chunk reads what Redis holds — never a state Redis does not have. A commit
on its way is waited for even when its chunk is cancelled (a deadline, a client gone): its
outcome, not the cancellation, decides the answer. A Redis user without a permission rnn-serve
needs is a steady readiness failure naming it, not a transient one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from service.core.errors import (
    ModelConflict,
    Overloaded,
    ServiceError,
    SessionStoreUnavailable,
    StateMismatch,
)
from service.core.metrics import Metrics
from service.core.outcome import outlive_cancellation, withdraw_cancellation
from service.engine.job import ForwardResult
from service.engine.state import SessionState, from_safetensors, to_safetensors
from service.sessions.redis_scripts import COMMIT, CREATE, DELETE, HOLD, PROBE
from service.sessions.session import Replay, Session, Stale

log = logging.getLogger("rnn_serve.sessions")
T = TypeVar("T")
PREFIX = "rnn-serve:"


class Conflict(Stale):
    """The session is not at the step a commit started from: `current` (-1: it is gone, -2:
    opened anew)."""

    def __init__(self, current: int) -> None:
        super().__init__(current)
        self.current = current


@dataclass(frozen=True)
class Stored:
    """A session as Redis holds it."""

    state: SessionState
    epoch: str
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
        if r.head is not None:
            extra["last.head"] = r.head
    return to_safetensors(state, tags, extra)


def decode(fields: dict[bytes, bytes], session_id: str, owner: str | None, pttl_ms: int) -> Stored:
    """A stored session's hash as the values it holds; ValueError (or a ServiceError) if they
    are not what a commit writes: it is then the store's damage, never the client's."""
    state, tags, extra = from_safetensors(fields[b"blob"], ("session_store",))
    if tags.get("id") != session_id or tags.get("owner", "") != (owner or ""):
        raise ValueError("a stored state of another session (a digest collision?)")
    step = fields.get(b"step", b"")
    if not step.isdigit() or int(step) != state.steps:
        raise ValueError(f"its step {step[:20]!r} is not its state's ({state.steps})")
    last = None
    if "last_start" in tags and "last.output" in extra:
        result = ForwardResult(
            extra["last.output"], extra["last.h_n"], extra.get("last.c_n"),
            head=extra.get("last.head"),
        )  # fmt: skip
        last = Replay(int(tags["last_start"]), tags["last_digest"], result)
    ttl = float(tags.get("ttl", "0"))
    epoch = fields.get(b"epoch", b"").decode("ascii", "replace")
    return Stored(state, epoch, ttl, max(0.0, pttl_ms / 1000), last, b"ended" in fields)


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
        hold_s: float = 60.0,
    ) -> None:
        import redis.asyncio as aioredis  # only where Redis is configured
        from redis.exceptions import NoPermissionError, NoScriptError, RedisError

        self._failures = (RedisError, OSError)  # what a call to Redis may raise: 503
        self._no_script = NoScriptError
        self._no_permission = NoPermissionError

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
        # how long a chunk may run before its commit (its deadline and the commit's own time):
        # a stored session nearer its expiry is held that long when the chunk starts
        self.hold_s = hold_s
        self._index = f"{PREFIX}index"
        self._create = self._client.register_script(CREATE)
        self._commit = self._client.register_script(COMMIT)
        self._hold = self._client.register_script(HOLD)
        self._delete = self._client.register_script(DELETE)
        self._probe = self._client.register_script(PROBE)
        self._pending: list[tuple[Any, list[str], list[Any], asyncio.Future[Any]]] = []
        self.healthy: tuple[bool, str] = (False, "the session store has not answered yet")

    def _key(self, name: str) -> str:
        return f"{PREFIX}s:{name}"

    def _unavailable(self, op: str, exc: BaseException) -> SessionStoreUnavailable:
        if isinstance(exc, self._no_permission):
            # a misconfiguration, not a passing failure: readiness keeps saying so
            refused = (
                f"the session store refuses a command rnn-serve needs ({exc}): grant it to "
                "the Redis user (docs/sessions.md lists the commands)"
            )
            self.healthy = (False, refused)
            return SessionStoreUnavailable(refused, retry_after=30)
        self.healthy = (False, f"the session store does not answer: {exc}")
        if op == "commit":
            return SessionStoreUnavailable(
                f"the session store (Redis) did not confirm this chunk's commit "
                f"({type(exc).__name__}): the chunk may or may not have been applied. Resend it "
                "with start_step, the step it started at: it is then applied once, or answered "
                "with its kept answer",
                retry_after=1,
            )
        return SessionStoreUnavailable(
            f"the session store (Redis) cannot be reached ({type(exc).__name__}); retry",
            retry_after=1,
        )

    async def _timed(self, op: str, call: Callable[[], Awaitable[T]]) -> T:
        started = time.perf_counter()
        try:
            result = await call()
        except self._failures as exc:
            self._metrics.session_store_errors.labels(op).inc()
            raise self._unavailable(op, exc) from None
        self._metrics.session_store_seconds.labels(op).observe(time.perf_counter() - started)
        return result

    async def ping(self) -> None:
        """Readiness: Redis answers, and lets rnn-serve run every command it needs (the reads
        in one round trip, the scripts' commands in the probe script)."""
        probe = f"{PREFIX}s:probe:{uuid.uuid4().hex}"
        name = probe.rpartition(":")[2]

        async def reads() -> None:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.ping()
                pipe.hgetall(probe)
                pipe.hmget(probe, ["step", "epoch"])
                pipe.pttl(probe)
                pipe.script_load(PROBE)
                await pipe.execute()

        await self._timed("ping", reads)
        await self._timed("ping", lambda: self._probe(keys=[probe, self._index], args=[name]))
        self.healthy = (True, "ready")

    async def create(self, session: Session, blob: bytes, replace: bool = False) -> None:
        """Store a new session (or, `replace`, restart one); ModelConflict if its id is taken,
        Overloaded past `max_sessions` across every replica."""
        name = member(session.id, session.owner)
        keys = [self._key(name), self._index]
        args: list[bytes | str | int] = [
            blob, session.steps, int(session.ttl * 1000), self.max_sessions,
            "1" if replace else "0", name, session.epoch,
        ]  # fmt: skip
        outcome = await self._timed("create", lambda: self._create(keys=keys, args=args))
        if outcome == b"taken":
            raise ModelConflict(f"session id {session.id!r} is taken")
        if outcome == b"full":
            raise Overloaded(
                f"{self.max_sessions} sessions are open across every replica "
                "(RNN_SERVE_MAX_SESSIONS); close some"
            )

    def _queue(self, script: Any, keys: list[str], args: list[Any]) -> asyncio.Future[Any]:
        """Scripts called in one turn of the event loop (the chunks of one batched forward)
        share one round trip."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((script, keys, args, future))
        if len(self._pending) == 1:
            loop.call_soon(self._flush)
        return future

    async def hold(self, session: Session) -> bool:
        """Keep the stored session from expiring while a chunk runs (renewed only when it would
        expire sooner than a chunk may take); False if it is gone or was opened anew."""
        if session.expires_at - time.time() > self.hold_s:
            return True
        name = member(session.id, session.owner)
        future = self._queue(self._hold, [self._key(name), self._index],
                             [session.epoch, int(self.hold_s * 1000), name])  # fmt: skip
        return bool(await future)

    async def commit(
        self, session: Session, from_step: int, blob: bytes, ended: bool = False
    ) -> None:
        """Advance the stored session from `from_step` to `session.steps`; Conflict if it is
        not at `from_step` (or not this opening). Once sent, the commit's outcome is waited for
        even if the caller is cancelled meanwhile: a commit that landed returns (the caller's
        cancellation withdrawn, the chunk was applied), one that did not re-raises it."""
        name = member(session.id, session.owner)
        keys = [self._key(name), self._index]
        args = [from_step, session.steps, blob, int(session.ttl * 1000), name,
                "1" if ended else "0", session.epoch]  # fmt: skip
        future = self._queue(self._commit, keys, args)
        cancels = await outlive_cancellation(future)
        try:
            done, current = future.result()
        except BaseException:
            withdraw_cancellation(cancels)
            raise
        if not done:
            self._metrics.session_store_conflicts.inc()
            if cancels:
                raise asyncio.CancelledError  # not applied: the cancellation stands
            if int(current) == -3:
                raise damaged(session.id)
            raise Conflict(int(current))
        withdraw_cancellation(cancels)
        self._metrics.session_store_commits.inc()

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.ensure_future(self._send(batch))
        task.add_done_callback(lambda t: t.exception())  # every outcome is in the futures

    async def _send(
        self, batch: list[tuple[Any, list[str], list[Any], asyncio.Future[Any]]]
    ) -> None:
        async def run() -> list[Any]:
            # EVALSHA straight into the pipeline: a Script object in a pipeline would cost a
            # SCRIPT EXISTS round trip before every batch. Redis forgot a script (a restart,
            # a failover): load them, and send the batch again.
            for attempt in range(2):
                async with self._client.pipeline(transaction=False) as pipe:
                    for script, keys, args, _ in batch:
                        pipe.evalsha(script.sha, len(keys), *keys, *args)
                    results: list[Any] = await pipe.execute(raise_on_error=False)
                if attempt == 0 and any(isinstance(r, self._no_script) for r in results):
                    for script in {id(b[0]): b[0] for b in batch}.values():
                        await self._client.script_load(script.script)
                    continue
                for result in results:
                    if isinstance(result, Exception):
                        raise result
                return results
            raise AssertionError("unreachable")

        op = "commit" if any(b[0] is self._commit for b in batch) else "hold"
        try:
            results = await self._timed(op, run)
        except BaseException as exc:
            for _, _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            raise
        self._metrics.session_store_pipeline.observe(len(batch))
        for (_, _, _, future), result in zip(batch, results, strict=True):
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
            return decode(fields, session_id, owner, int(pttl))
        except (ValueError, ServiceError) as exc:
            log.warning("session store: an unreadable state for a session: %s", exc)
            raise damaged(session_id) from None

    async def current(self, session: Session) -> bool:
        """Whether a cached copy is the stored session: at its step, of its opening."""
        key = self._key(member(session.id, session.owner))

        async def read() -> list[Any]:
            results: list[Any] = await self._client.hmget(key, ["step", "ended", "epoch"])
            return results

        step, ended, epoch = await self._timed("step", read)
        if step is None or ended is not None:
            return False
        return bool(
            step == str(session.steps).encode() and (epoch or b"") == session.epoch.encode()
        )

    async def delete(self, session_id: str, owner: str | None) -> bool:
        """Remove the session, whatever its stored state holds; whether an open one was there."""
        name = member(session_id, owner)
        keys = [self._key(name), self._index]
        found = await self._timed("delete", lambda: self._delete(keys=keys, args=[name]))
        return bool(found)

    async def watch(self, every_s: float = 1.0) -> None:
        """Background task: keep `healthy` (readiness) current."""
        task = asyncio.current_task()
        while True:
            with contextlib.suppress(SessionStoreUnavailable):
                await self.ping()
            if task is not None and task.cancelling():
                # a cancellation (the server stopping) that the Redis client swallowed while a
                # call was in flight: stop all the same, or the shutdown waits forever
                raise asyncio.CancelledError
            await asyncio.sleep(every_s)

    async def close(self) -> None:
        await self._client.aclose()


def damaged(session_id: str) -> StateMismatch:
    return StateMismatch(
        f"the stored state of session {session_id!r} cannot be read (written by another "
        "version, or damaged); open a new session"
    )
