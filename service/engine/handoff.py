"""Sessions that outlive their replica: state handed over through the shared model repository.

Replicas behind one load balancer share the model repository (a volume). Under its
`.sessions/` folder:
- `instances/<instance>`: each running replica's heartbeat, touched every second;
- `owners/<h>`: which replica holds session `h` (the SHA-256 of its id), and the API key that
  owns it; written when a session opens or moves, removed when it ends;
- `states/<h>`: a session's state, written by a replica that gives it up (safetensors, tagged
  with the model's weights digest, the step count, the kept answer of its last chunk, its owner
  and expiry);
- `wants/<h>`: a replica asking the holder to give a session up.

A replica asked about a session it does not hold (the load balancer's ring moved: a replica
stopped, started or was added):
1. a state file is there: it claims it (an atomic rename, so one replica wins), resumes the
   session exactly — state, step count, kept answer, owner, expiry — and writes itself as owner;
2. the owner is alive (its heartbeat is fresh): it writes a want, which the owner answers within
   ~50 ms by writing the state file (after the chunk it may be running), and goes to 1; if none
   comes within `RNN_SERVE_SESSION_HANDOFF_WAIT_S`, 503 with Retry-After;
3. the owner is dead (killed: no heartbeat for 5 s) and left no state: 410 `SessionLost`,
   never a silent restart from zero — the client resumes from a state it exported;
4. no owner: 404, as for any unknown session.

On SIGTERM a replica writes every session's state before it exits (after its in-flight chunks),
so a rolling restart loses nothing. Expiry, `RNN_SERVE_MAX_SESSIONS` and the state-byte budget
hold on the replica that resumes a session (429 leaves the state file for a later try). Files
of sessions nobody resumed are removed once they would have expired.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np

from service.catalog.catalog import Catalog
from service.catalog.spec import ModelSpec
from service.engine.job import ForwardResult
from service.engine.session import Replay, Session, snapshot
from service.engine.sessions import SessionStore
from service.engine.state import from_safetensors, to_safetensors
from service.errors import (
    ModelConflict,
    ModelNotFound,
    NotReady,
    Overloaded,
    SessionLost,
)
from service.metrics import Metrics

log = logging.getLogger("rnn_serve.sessions")

HEARTBEAT_S = 1.0
DEAD_AFTER_S = 5.0  # a heartbeat older than this: the replica is gone
POLL_S = 0.05  # how often a replica looks for wants, and a claimer for the state file
CLEAN_EVERY_S = 60.0

Digest = Callable[[ModelSpec], Awaitable[str]]


class _Foreign(Exception):
    """A state file that is not the caller's session (another key's)."""


class _Gone(Exception):
    """A state file was there, but its session is over (expired, its model deleted)."""


def file_key(session_id: str, owner: str | None) -> str:
    """A session's file name: ids are per API key, as in the store."""
    return hashlib.sha256(f"{owner or ''}\n{session_id}".encode()).hexdigest()[:40]


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


class Handoff:
    def __init__(
        self,
        repository: Path,
        store: SessionStore,
        registry: Catalog,
        metrics: Metrics,
        digest: Digest,
        wait_s: float,
    ) -> None:
        self.root = repository / ".sessions"
        self.instances, self.owners = self.root / "instances", self.root / "owners"
        self.states, self.wants = self.root / "states", self.root / "wants"
        for folder in (self.instances, self.owners, self.states, self.wants):
            folder.mkdir(parents=True, exist_ok=True)
        self.instance = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self.heartbeat = self.instances / self.instance
        self.store, self.registry, self.metrics = store, registry, metrics
        self.digest, self.wait_s = digest, wait_s
        self._held: dict[str, Session] = {}  # file key -> session held here
        self._giving: set[str] = set()  # file keys being handed over now
        store.on_open, store.on_drop = self._opened, self._dropped
        self.heartbeat.write_bytes(b"")

    # --- markers: kept in step with the store --------------------------------------------------
    def _marker(self, session: Session) -> bytes:
        return f"{self.instance}\n{session.owner or ''}\n".encode()

    def _opened(self, session: Session) -> None:
        key = file_key(session.id, session.owner)
        self._held[key] = session
        try:
            _write_atomic(self.owners / key, self._marker(session))
        except OSError as exc:  # the session works here; it just cannot move
            log.warning("cannot record session %s in %s: %s", key, self.owners, exc)

    def _dropped(self, session: Session) -> None:
        key = file_key(session.id, session.owner)
        if self._held.get(key) is session:
            del self._held[key]
        marker = _read(self.owners / key)
        if marker is not None and marker.split(b"\n", 1)[0] == self.instance.encode():
            with contextlib.suppress(OSError):
                (self.owners / key).unlink()

    # --- the replica that asks ------------------------------------------------------------------
    def _alive(self, instance: str) -> bool:
        try:
            return time.time() - (self.instances / instance).stat().st_mtime < DEAD_AFTER_S
        except (FileNotFoundError, ValueError):
            return False

    async def fetch(self, session_id: str, owner: str | None) -> Session | None:
        """The session `session_id`, taken over from wherever it was handed; None if no replica
        knows it (404). SessionLost (410) if it died with a replica; NotReady (503) if the
        holder did not hand it over in time."""
        key = file_key(session_id, owner)
        deadline = time.monotonic() + self.wait_s
        wanted = False
        try:
            while True:
                try:
                    session = await self._claim(session_id, key, owner)
                except (_Foreign, _Gone):
                    return None  # over, or another key's: as good as unknown (404)
                if session is not None:
                    return session
                marker = _read(self.owners / key)
                if marker is None:
                    return None
                holder, _, rest = marker.decode(errors="replace").partition("\n")
                if rest.rstrip("\n") != (owner or ""):
                    return None  # another key's session: as good as unknown
                if holder == self.instance and key not in self._giving:
                    return None  # ours, and ended here meanwhile
                if holder != self.instance and not self._alive(holder):
                    if (self.states / key).exists():
                        continue  # it wrote the state just before it stopped
                    self.metrics.session_handoffs.labels("lost").inc()
                    raise SessionLost(
                        f"session {session_id!r} was lost: the replica that held it stopped "
                        "without handing its state over (killed). Resume from a state you "
                        "exported (GET /v1/sessions/{id}/state): open a new session with it "
                        'as "state" (POST /v1/models/{name}/sessions)'
                    )
                if not wanted:
                    _write_atomic(self.wants / key, self.instance.encode())
                    wanted = True
                if time.monotonic() > deadline:
                    raise NotReady(
                        f"session {session_id!r} is held by another replica that has not handed "
                        f"it over within {self.wait_s:g}s (RNN_SERVE_SESSION_HANDOFF_WAIT_S); "
                        "retry"
                    )
                await asyncio.sleep(POLL_S)
        finally:
            if wanted:
                with contextlib.suppress(OSError):
                    (self.wants / key).unlink()

    async def _claim(self, session_id: str, key: str, owner: str | None) -> Session | None:
        """The session resumed from its state file; None if there is none; _Gone if there was
        one but the session is over (expired, its model deleted): 404, as for any ended one."""
        claimed = self.states / f".{key}.claim-{self.instance}"
        try:
            os.rename(self.states / key, claimed)  # atomic: one replica wins
        except FileNotFoundError:
            return None
        try:
            session = await self._resume(session_id, claimed.read_bytes(), owner)
        except (Overloaded, NotReady, _Foreign):
            os.rename(claimed, self.states / key)  # leave it for a later try, or its owner
            raise
        except BaseException:
            claimed.unlink(missing_ok=True)
            raise
        claimed.unlink(missing_ok=True)
        if session is None:
            with contextlib.suppress(OSError):
                (self.owners / key).unlink()
            raise _Gone
        self.metrics.session_handoffs.labels("in").inc()
        log.info("session %s resumed here at step %d", key, session.steps)
        return session

    async def _resume(self, session_id: str, data: bytes, owner: str | None) -> Session | None:
        state, tags, extra = from_safetensors(data)
        if tags.get("id") != session_id or tags.get("owner", "") != (owner or ""):
            raise _Foreign  # another key's (or a hash collision): not this caller's to take
        remaining = float(tags.get("expires_at", "0")) - time.time()
        if remaining <= 0:
            return None  # it would have expired: gone, as expired sessions are
        try:
            spec = self.registry.get(state.model)
        except ModelNotFound:
            return None
        if await self.digest(spec) != state.weights_digest:
            raise ModelConflict(
                f"the weights of model {state.model!r} changed; session {session_id!r} was "
                "ended, open a new one"
            )
        session = self.store.open(
            spec, *state.initial_state(), state.batch if state.batched else None, key=session_id,
            owner=owner, steps=state.steps,
        )  # fmt: skip
        if state.batched is False:
            session.batched, session.batch = False, 1
        ttl = float(tags.get("ttl", session.ttl))
        session.ttl = ttl
        session.last_used = time.monotonic() - max(0.0, ttl - remaining)
        if "last_start" in tags and "last.output" in extra:
            result = ForwardResult(extra["last.output"], extra["last.h_n"], extra.get("last.c_n"))
            session.last = Replay(int(tags["last_start"]), tags["last_digest"], result)
        return session

    # --- the replica that gives -------------------------------------------------------------
    async def give(self, session: Session, lock_wait_s: float = 60.0) -> str | None:
        """Write the session's state for another replica and forget it here (after the chunk it
        may be running). None once handed over; else why it was not."""
        key = file_key(session.id, session.owner)
        self._giving.add(key)
        try:
            await asyncio.wait_for(session.lock.acquire(), lock_wait_s)
        except TimeoutError:
            self._giving.discard(key)
            return f"its chunk still ran after {lock_wait_s:g}s"
        try:
            if self.store.get_held(session.id, session.owner) is not session:
                return "it ended meanwhile (closed, expired or ended for room)"
            spec = self.registry.get(session.model)
            if spec.version != session.version:
                return "its model's weights changed (it ends at its next chunk anyway)"
            state = snapshot(session, spec, await self.digest(spec))
            tags = {
                "id": session.id, "owner": session.owner or "", "ttl": repr(session.ttl),
                "expires_at": repr(session.expires_at),
            }  # fmt: skip
            extra: dict[str, np.ndarray] = {}
            if session.last is not None:
                r = session.last.result
                tags.update(last_start=str(session.last.start), last_digest=session.last.digest)
                extra = {"last.output": r.output, "last.h_n": r.h_n}
                if r.c_n is not None:
                    extra["last.c_n"] = r.c_n
            data = to_safetensors(state, tags, extra)
            await asyncio.to_thread(_write_atomic, self.states / key, data)
            self.store.release(session)
            self._held.pop(key, None)
            self.metrics.session_handoffs.labels("out").inc()
            return None
        except ModelNotFound:
            return "its model was deleted"
        except (NotReady, OSError) as exc:
            log.warning("could not hand session %s over: %s", key, exc)
            return f"its state could not be written ({type(exc).__name__})"
        finally:
            session.lock.release()
            self._giving.discard(key)

    async def give_all(self) -> int:
        """On shutdown: hand every session over, then stop the heartbeat. Logs how many were
        handed over and, for the rest, why not."""
        sessions = self.store.sessions()
        outcomes = await asyncio.gather(*(self.give(s, 30.0) for s in sessions))
        with contextlib.suppress(OSError):
            self.heartbeat.unlink()
        given = outcomes.count(None)
        if sessions:
            why = collections.Counter(o for o in outcomes if o is not None)
            reasons = "; ".join(f"{n} because {reason}" for reason, n in why.most_common())
            log.info(
                "handed %d of %d sessions over%s", given, len(sessions),
                f"; not handed over: {reasons}" if reasons else "",
            )  # fmt: skip
        return given

    async def run(self) -> None:
        """Background task: the heartbeat, answering wants, removing what nobody will resume."""
        beat = clean = 0.0
        tasks: set[asyncio.Task[str | None]] = set()
        while True:
            now = time.monotonic()
            if now - beat >= HEARTBEAT_S:
                beat = now
                try:
                    os.utime(self.heartbeat)
                except FileNotFoundError:
                    self.heartbeat.write_bytes(b"")
                except OSError as exc:
                    log.warning("cannot touch the heartbeat %s: %s", self.heartbeat, exc)
            if now - clean >= CLEAN_EVERY_S:
                clean = now
                await asyncio.to_thread(self.clean)
            try:
                wanted = [e.name for e in os.scandir(self.wants) if not e.name.startswith(".")]
            except OSError:
                wanted = []
            for key in wanted:
                session = self._held.get(key)
                if session is not None and key not in self._giving:
                    task = asyncio.create_task(self.give(session))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            await asyncio.sleep(POLL_S)

    def clean(self) -> None:
        """Remove state files older than a session lives idle, wants nobody waits for, and
        markers and heartbeats of replicas long gone."""
        now = time.time()
        ttl = self.store.ttl_s
        for folder, age in (
            (self.states, ttl + CLEAN_EVERY_S),
            (self.wants, CLEAN_EVERY_S),
            (self.instances, ttl + CLEAN_EVERY_S),
        ):
            for entry in _entries(folder):
                with contextlib.suppress(OSError):
                    if now - entry.stat().st_mtime > age:
                        os.unlink(entry.path)
        for entry in _entries(self.owners):
            with contextlib.suppress(OSError):
                holder = Path(entry.path).read_bytes().split(b"\n", 1)[0].decode()
                if not self._alive(holder) and now - entry.stat().st_mtime > ttl:
                    os.unlink(entry.path)


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    try:
        return list(os.scandir(folder))
    except OSError:
        return []
