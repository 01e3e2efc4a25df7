"""Sessions in Redis when the world is hostile: ids reused across replicas, a store that stalls
or stops mid-commit, garbage in Redis, a Redis user without a permission, a chunk longer than its
session's time-to-live. Two in-process replicas on a real redis-server; every number is checked
against the float64 oracle."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
from asgi_lifespan import LifespanManager

from service.app import create_app
from service.engine.state import SessionState, from_safetensors, to_safetensors
from service.sessions.redis_store import PREFIX, member
from tests.conftest import make_settings, open_client
from tests.oracle import forward, seeded_params
from tests.support import eventually
from tests.support.helpers import b64, chunk, decode, open_session
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.anyio
SEED = {"input_size": 10, "hidden_size": 20, "num_layers": 2}
RNG = np.random.default_rng(28)


def oracle(x: np.ndarray, config: dict[str, Any] = SEED, **kw: Any) -> np.ndarray:
    out, _, _ = forward(seeded_params(config), config, x, **kw)
    return out


def settings(redis_server: RedisServer, repo: Path, **overrides: Any) -> Any:
    return make_settings(model_repository=repo, session_store=redis_server.url, **overrides)


def infer(part: np.ndarray, start: int, **params: Any) -> dict[str, Any]:
    return {
        "inputs": [{"name": "input", "shape": list(part.shape), "datatype": "FP32",
                    "data": part.ravel().tolist()}],
        "parameters": {"sequence_id": 7, "start_step": start, **params},
    }  # fmt: skip


def output(r: httpx.Response) -> np.ndarray:
    assert r.status_code == 200, r.text
    o = next(o for o in r.json()["outputs"] if o["name"] == "output")
    return np.asarray(o["data"], np.float64).reshape(o["shape"])


def key_of(sid: str, owner: str | None = None) -> str:
    return f"{PREFIX}s:{member(sid, owner)}"


# --- one id, two openings ---------------------------------------------------------------------
async def test_a_sequence_restarted_on_another_replica_is_never_continued_from_a_stale_copy(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Sequence 7 started on A with stream X, restarted on B with stream Y at the same step
    count; the next chunk goes to A. A's cached copy of X is stale: the answer is Y's, and so is
    every later one, on either replica."""
    x = RNG.standard_normal((5, 10)).astype(np.float32)
    y = RNG.standard_normal((15, 10)).astype(np.float32)
    async for a in open_client(settings(redis_server, tmp_path / "r")):
        async for b in open_client(settings(redis_server, tmp_path / "r")):
            output(await a.post("/v2/models/default/infer", json=infer(x, 0, sequence_start=True)))
            outs = [output(await b.post("/v2/models/default/infer",
                                        json=infer(y[:5], 0, sequence_start=True)))]  # fmt: skip
            outs.append(output(await a.post("/v2/models/default/infer", json=infer(y[5:10], 5))))
            outs.append(output(await b.post("/v2/models/default/infer", json=infer(y[10:], 10))))
            np.testing.assert_allclose(np.concatenate(outs), oracle(y), atol=1e-5)


async def test_a_v1_id_closed_and_opened_again_elsewhere_uses_the_new_opening(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """A v1 id (offered with X-Session-ID) opened on A with h0 A, closed on B and opened again
    there with h0 B: A's next chunk uses h0 B. And a resend that A could answer from its kept
    answer of the first opening is answered from the new one's."""
    sid = "reused-session-id-0123456789"
    x = RNG.standard_normal((3, 1, 10)).astype(np.float32)
    h_a, h_b = (RNG.standard_normal((2, 1, 20)).astype(np.float32) for _ in range(2))
    offer = {"X-Session-ID": sid}
    async for a in open_client(settings(redis_server, tmp_path / "r")):
        async for b in open_client(settings(redis_server, tmp_path / "r")):
            for h0, opener in ((h_a, a), (h_b, b)):
                if h0 is h_b:
                    assert (await b.delete(f"/v1/sessions/{sid}")).status_code == 204
                r = await opener.post("/v1/models/default/sessions", json={"h0": b64(h0)},
                                      headers=offer)  # fmt: skip
                assert r.status_code == 201, r.text
                assert r.json()["session_id"] == sid
                if h0 is h_a:
                    assert (await a.get(f"/v1/sessions/{sid}")).status_code == 200  # cached on A
            r = await chunk(a, sid, x)
            assert r.status_code == 200, r.text
            np.testing.assert_allclose(decode(r.json()["output"]), oracle(x, h0=h_b), atol=1e-5)

            # kept answers: A answers step 0 for the first opening, then B reopens and applies
            # the same chunk at step 0 with its own h0: a resend to A gets B's answer
            assert (await b.delete(f"/v1/sessions/{sid}")).status_code == 204
            await a.post("/v1/models/default/sessions", json={"h0": b64(h_a)}, headers=offer)
            assert (await chunk(a, sid, x, start_step=0)).status_code == 200
            assert (await b.delete(f"/v1/sessions/{sid}")).status_code == 204
            await b.post("/v1/models/default/sessions", json={"h0": b64(h_b)}, headers=offer)
            assert (await chunk(b, sid, x, start_step=0)).status_code == 200
            r = await chunk(a, sid, x, start_step=0)
            assert r.status_code == 200, r.text
            np.testing.assert_allclose(decode(r.json()["output"]), oracle(x, h0=h_b), atol=1e-5)


# --- a store that stalls or stops mid-commit ---------------------------------------------------
async def test_a_deadline_during_a_stalled_commit_tells_the_truth(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Redis stalls (DEBUG SLEEP 0.8) while a chunk with a 0.5 s deadline commits. The commit
    lands after the deadline: the answer is the chunk's (200), not a 504 saying nothing changed."""
    x = RNG.standard_normal((10, 1, 10)).astype(np.float32)
    async for c in open_client(settings(redis_server, tmp_path / "r")):
        sid = await open_session(c)
        first = await chunk(c, sid, x[:5], start_step=0)
        assert first.status_code == 200, first.text
        stall = threading.Thread(
            target=lambda: redis.Redis(port=redis_server.port).execute_command(  # type: ignore[no-untyped-call]
                "DEBUG", "SLEEP", 0.8
            )
        )
        stall.start()
        await asyncio.sleep(0.1)  # (DEBUG SLEEP has reached Redis: it blocks what comes next)
        r = await c.post(
            f"/v1/sessions/{sid}/forward",
            json={"input": b64(x[5:]), "output_encoding": "b64", "start_step": 5},
            headers={"X-Request-Timeout": "0.5"},
        )
        await asyncio.to_thread(stall.join)
        steps = (await c.get(f"/v1/sessions/{sid}")).json()["steps"]
        assert (r.status_code, steps) == (200, 10), (r.text, steps)
        got = np.concatenate([decode(first.json()["output"]), decode(r.json()["output"])])
        np.testing.assert_allclose(got, oracle(x), atol=1e-5)


async def test_a_commit_redis_never_confirmed_says_its_outcome_is_unknown(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Redis stopped (SIGSTOP) mid-commit: the 503 says the chunk may have been applied; the
    resend with start_step, once Redis is back, is applied exactly once."""
    x = RNG.standard_normal((10, 1, 10)).astype(np.float32)
    async for c in open_client(settings(redis_server, tmp_path / "r", session_store_timeout_s=0.5)):
        sid = await open_session(c)
        first = await chunk(c, sid, x[:5], start_step=0)
        assert redis_server.proc is not None
        os.kill(redis_server.proc.pid, signal.SIGSTOP)
        try:
            r = await chunk(c, sid, x[5:], start_step=5)
        finally:
            os.kill(redis_server.proc.pid, signal.SIGCONT)
        assert r.status_code == 503, r.text
        assert "may or may not have been applied" in r.json()["detail"], r.text
        assert "start_step" in r.json()["detail"]
        resend = functools.partial(chunk, c, sid, x[5:], start_step=5)
        # (the store's client reconnects after the stall)
        again = await eventually(resend, lambda r: r.status_code != 503, 5)
        assert again.status_code == 200, again.text
        assert again.json()["steps"] == 10
        got = np.concatenate([decode(first.json()["output"]), decode(again.json()["output"])])
        np.testing.assert_allclose(got, oracle(x), atol=1e-5)


async def test_a_chunk_longer_than_the_ttl_keeps_its_session(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """A session with a 0.5 s time-to-live and a chunk of seconds: the session is held while the
    chunk runs, and the chunk is answered and committed (never computed, then 404)."""
    config = {"input_size": 1, "hidden_size": 256}
    x = RNG.standard_normal((40_000, 1)).astype(np.float32)  # seconds of one core
    async for c in open_client(settings(redis_server, tmp_path / "r", session_ttl_s=0.5)):
        r = await c.post("/v1/models", json={"name": "long", "config": config})
        assert r.status_code == 201, r.text
        sid = await open_session(c, "long")
        r = await c.post(f"/v1/sessions/{sid}/forward", json={"input": b64(x[:2])})
        assert r.status_code == 200, r.text
        r = await c.post(f"/v1/sessions/{sid}/forward", json={"input": b64(x[2:])}, timeout=120)
        assert r.status_code == 200, r.text[:300]
        assert r.json()["steps"] == len(x)
        h = decode(r.json()["h_n"])
        _, want, _ = forward(seeded_params(config), config, x)
        np.testing.assert_allclose(h, want, atol=1e-4)


# --- garbage in Redis is the store's, never the client's --------------------------------------
async def test_garbage_in_redis_is_409_and_delete_always_works(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    store = redis.Redis(port=redis_server.port)
    async for a in open_client(settings(redis_server, tmp_path / "r")):
        async for b in open_client(settings(redis_server, tmp_path / "r")):
            # a step that is not a number
            sid = await open_session(a)
            await chunk(a, sid, np.ones((2, 1, 10), np.float32))
            store.hset(key_of(sid), "step", "abc")
            for c in (a, b):
                for r in (
                    await c.get(f"/v1/sessions/{sid}"),
                    await chunk(c, sid, np.ones((2, 1, 10), np.float32)),
                    await c.get(f"/v1/sessions/{sid}/state"),
                ):
                    assert r.status_code == 409, r.text
                    assert r.json()["type"].endswith("state-mismatch"), r.text
            assert (await b.delete(f"/v1/sessions/{sid}")).status_code == 204
            assert (await a.get(f"/v1/sessions/{sid}")).status_code == 404

            # a stored state of the wrong shape, tagged as this session's
            sid = await open_session(a)
            await chunk(a, sid, np.ones((2, 1, 10), np.float32))
            blob = store.hget(key_of(sid), "blob")
            assert isinstance(blob, bytes)
            state, tags, _ = from_safetensors(blob, ("session_store",))
            wrong = SessionState(
                state.model, state.weights_digest, state.mode, state.dtype, state.steps,
                (np.zeros((2, 1, 7), np.float32),), True, 1,
            )  # fmt: skip
            store.hset(key_of(sid), "blob", to_safetensors(wrong, tags, {}))
            # (A's cached copy is a good state at the stored step and opening; B has none)
            for r in (
                await chunk(b, sid, np.ones((2, 1, 10), np.float32)),
                await b.get(f"/v1/sessions/{sid}/state"),
            ):
                assert r.status_code == 409, r.text
                assert r.json()["type"].endswith("state-mismatch"), r.text
                assert "h0" not in str(r.json().get("errors")), r.text
            assert (await b.delete(f"/v1/sessions/{sid}")).status_code == 204
            assert (await b.delete(f"/v1/sessions/{sid}")).status_code == 404
            assert (await a.get(f"/v1/sessions/{sid}")).status_code == 404  # its copy is gone


# --- a Redis user without a permission is a steady, named failure -----------------------------
async def test_a_redis_user_without_evalsha_is_never_ready_and_says_why(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    admin = redis.Redis(port=redis_server.port)
    admin.execute_command(  # type: ignore[no-untyped-call]
        "ACL", "SETUSER", "limited", "on", ">secret", "~*", "&*", "+@all",
                          "-evalsha")  # fmt: skip
    url = f"redis://limited:secret@127.0.0.1:{redis_server.port}/0"
    app = create_app(make_settings(model_repository=tmp_path / "r", session_store=url))
    async with (
        LifespanManager(app, startup_timeout=60) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(manager.app), base_url="http://t") as c,
    ):
        seen = []
        until = time.monotonic() + 3
        while time.monotonic() < until:  # readiness never flaps to 200 meanwhile
            r = await c.get("/readyz")
            seen.append((r.status_code, r.json()["detail"]))
            await asyncio.sleep(0.1)
        assert {status for status, _ in seen} == {503}, seen
        assert "evalsha" in seen[-1][1], seen[-1]
        r = await c.post("/v1/models/default/sessions", json={})
        assert r.status_code == 503, r.text
        assert "evalsha" in r.json()["detail"], r.text
        assert "grant" in r.json()["detail"], r.text
        assert r.headers["retry-after"] == "30"


async def test_a_409_after_repeated_conflicts_names_the_step_redis_holds(
    tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another replica's chunk lands just before each of this replica's commits (a real write
    to the real Redis, made as the other replica would): after its retries the chunk is 409,
    and its current_step is the step Redis holds, not this replica's own count."""
    from dataclasses import replace

    from service.runtime import host as host_module
    from service.sessions.redis_store import RedisSessions
    from service.sessions.session import Session

    store = redis.Redis(port=redis_server.port)

    racing = False

    class Raced(RedisSessions):
        async def commit(
            self, session: Session, from_step: int, blob: bytes, ended: bool = False
        ) -> None:
            if not racing:
                return await super().commit(session, from_step, blob, ended)
            key = key_of(session.id, session.owner)
            stored = store.hget(key, "blob")
            assert isinstance(stored, bytes)
            state, tags, _ = from_safetensors(stored, ("session_store",))
            ahead = replace(state, steps=state.steps + 7)  # the other replica's chunk
            own = {k: tags[k] for k in ("id", "owner", "ttl")}
            store.hset(key, mapping={"step": ahead.steps,
                                     "blob": to_safetensors(ahead, own, {})})  # fmt: skip
            await super().commit(session, from_step, blob, ended)

    monkeypatch.setattr(host_module, "RedisSessions", Raced)
    async for c in open_client(settings(redis_server, tmp_path / "r")):
        sid = await open_session(c)
        assert (await chunk(c, sid, np.ones((2, 1, 10), np.float32))).status_code == 200
        racing = True
        r = await chunk(c, sid, np.ones((2, 1, 10), np.float32))
        assert r.status_code == 409, r.text
        held = store.hget(key_of(sid), "step")
        assert held is not None
        assert r.json().get("current_step") == int(held) == 2 + 3 * 7, r.text


async def test_an_id_opened_again_for_another_model_is_never_run_on_the_old_one(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    sid = "reused-across-models-0123456789"
    offer = {"X-Session-ID": sid}
    other = {"input_size": 10, "hidden_size": 5}
    x = RNG.standard_normal((3, 1, 10)).astype(np.float32)
    async for a in open_client(settings(redis_server, tmp_path / "r")):
        async for b in open_client(settings(redis_server, tmp_path / "r")):
            assert (await b.post("/v1/models", json={"name": "other", "config": other})).is_success
            r = await a.post("/v1/models/default/sessions", json={}, headers=offer)
            assert r.status_code == 201, r.text
            assert (await b.delete(f"/v1/sessions/{sid}")).status_code == 204
            r = await b.post("/v1/models/other/sessions", json={}, headers=offer)
            assert r.status_code == 201, r.text
            first = await chunk(a, sid, x)  # A's copy says "default"
            assert first.status_code == 409, first.text
            r = await chunk(a, sid, x)  # sent again: the model the id has now
            assert r.status_code == 200, r.text
            want = oracle(x, other)
            np.testing.assert_allclose(decode(r.json()["output"]), want, atol=1e-5)
