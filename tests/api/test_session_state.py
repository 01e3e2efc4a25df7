"""Sessions that survive: portable state (export, resume, fork), exactly-once chunks, and
sessions in Redis that any replica serves and no restart loses. Every stream is checked against the
float64 oracle over the whole sequence."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from safetensors.numpy import load
from safetensors.torch import save

from tests.conftest import make_settings, open_client, wait_ready
from tests.oracle import forward, seeded_params
from tests.support import eventually, wait_for
from tests.support.helpers import b64, chunk, decode, open_session
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.anyio
SEED = {"input_size": 10, "hidden_size": 20, "num_layers": 2}


def oracle(x: np.ndarray, config: dict[str, Any] = SEED, **kw: Any) -> np.ndarray:
    out, _, _ = forward(seeded_params(config), config, x, **kw)
    return out


async def test_export_and_resume_json_and_safetensors(fresh_client: httpx.AsyncClient) -> None:
    c = fresh_client
    x = np.random.default_rng(0).standard_normal((12, 3, 10)).astype(np.float32)
    sid = await open_session(c)
    first = decode((await chunk(c, sid, x[:5])).json()["output"])

    r = await c.get(f"/v1/sessions/{sid}/state")
    assert r.status_code == 200, r.text
    exported = r.json()
    assert exported["steps"] == 5
    assert exported["model"] == "default"
    assert exported["weights_digest"].startswith("sha256:")
    assert exported["batch_size"] == 3
    assert exported["format"] == "rnn-serve.session-state/1"
    binary = await c.get(f"/v1/sessions/{sid}/state", params={"format": "safetensors"})
    assert binary.headers["content-type"] == "application/octet-stream"
    accept = await c.get(
        f"/v1/sessions/{sid}/state", headers={"accept": "application/octet-stream"}
    )
    assert accept.headers["content-type"] == "application/octet-stream"
    # (metadata order in a safetensors header is not fixed: compare what the files hold)
    h = load(binary.content)["h"]
    np.testing.assert_array_equal(load(accept.content)["h"], h)
    np.testing.assert_array_equal(decode(exported["h"]), h)

    # resume elsewhere, twice: from the JSON form and from the safetensors file
    from_json = (await c.post("/v1/models/default/sessions", json={"state": exported})).json()
    from_file = (
        await c.post(
            "/v1/models/default/sessions",
            content=binary.content,
            headers={"content-type": "application/octet-stream"},
        )
    ).json()
    want = oracle(x)
    for opened in (from_json, from_file):
        assert opened["steps"] == 5
        assert opened["batch_size"] == 3
        r = await chunk(c, opened["session_id"], x[5:])
        assert r.json()["steps"] == 12
        got = np.concatenate([first, decode(r.json()["output"])])
        np.testing.assert_allclose(got, want, atol=1e-5)


async def test_export_before_any_chunk_and_with_h0(fresh_client: httpx.AsyncClient) -> None:
    c = fresh_client
    rng = np.random.default_rng(1)
    empty = (await c.get(f"/v1/sessions/{await open_session(c)}/state")).json()
    assert empty["steps"] == 0
    assert empty["batched"] is None
    assert "h" not in empty
    resumed = (await c.post("/v1/models/default/sessions", json={"state": empty})).json()
    x = rng.standard_normal((4, 10)).astype(np.float32)
    r = await chunk(c, resumed["session_id"], x)
    np.testing.assert_allclose(decode(r.json()["output"]), oracle(x), atol=1e-5)

    h0 = rng.standard_normal((2, 20)).astype(np.float32)  # a custom initial state, unbatched
    state = (await c.get(f"/v1/sessions/{await open_session(c, h0=b64(h0))}/state")).json()
    assert state["batched"] is False
    resumed = (await c.post("/v1/models/default/sessions", json={"state": state})).json()
    r = await chunk(c, resumed["session_id"], x)
    np.testing.assert_allclose(decode(r.json()["output"]), oracle(x, h0=h0), atol=1e-5)


async def test_state_from_other_weights_is_refused(tmp_path: Path, anyio_backend: str) -> None:
    async for c in open_client(make_settings(model_repository=tmp_path / "r")):
        config = {"input_size": 2, "hidden_size": 3}
        await c.post("/v1/models", json={"name": "m", "config": config})
        await c.post("/v1/models", json={"name": "n", "config": {**config, "hidden_size": 4}})
        sid = await open_session(c, "m")
        await chunk(c, sid, np.ones((2, 2), np.float32))
        state = (await c.get(f"/v1/sessions/{sid}/state")).json()
        # another model's weights: 409
        r = await c.post("/v1/models/n/sessions", json={"state": state})
        assert r.status_code == 409, r.text
        assert r.json()["type"].endswith("state-mismatch"), r.text
        # the same model after new weights: 409 too
        torch.manual_seed(1)
        await c.put(
            "/v1/models/m/weights",
            content=save(torch.nn.RNN(2, 3).state_dict()),
            headers={"content-type": "application/octet-stream"},
        )
        r = await c.post("/v1/models/m/sessions", json={"state": state})
        assert r.status_code == 409, r.text
        assert "other weights" in r.json()["detail"], r.text


@pytest.mark.parametrize(
    ("body", "status", "where"),
    [
        ({"state": {"format": "nope"}}, 422, "format"),
        ({"state": {"format": "rnn-serve.session-state/1"}}, 422, "steps"),
        ({"state": {}, "h0": [[0.0] * 20] * 2}, 422, "state"),
    ],
)
async def test_bad_states_are_4xx_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], status: int, where: str
) -> None:
    r = await client.post("/v1/models/default/sessions", json=body)
    assert r.status_code == status, r.text
    assert where in str(r.json()["errors"]), r.text


async def test_bad_state_files_and_shapes(client: httpx.AsyncClient) -> None:
    c = client
    r = await c.post(
        "/v1/models/default/sessions",
        content=b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!",
        headers={"content-type": "application/octet-stream"},
    )
    assert r.status_code == 400, r.text
    assert "safetensors" in r.json()["detail"], r.text
    sid = await open_session(c)
    await chunk(c, sid, np.ones((2, 1, 10), np.float32))
    state = (await c.get(f"/v1/sessions/{sid}/state")).json()
    state["h"] = b64(np.zeros((3, 1, 20), np.float32))  # 3 layers' worth for a 2-layer model
    r = await c.post("/v1/models/default/sessions", json={"state": state})
    assert r.status_code == 422, r.text
    assert "(2, 1, 20)" in r.text, r.text


async def test_fork_branches_independently(fresh_client: httpx.AsyncClient) -> None:
    c = fresh_client
    rng = np.random.default_rng(2)
    prefix = rng.standard_normal((6, 2, 10)).astype(np.float32)
    a, b = (rng.standard_normal((4, 2, 10)).astype(np.float32) for _ in range(2))
    sid = await open_session(c)
    first = decode((await chunk(c, sid, prefix)).json()["output"])
    r = await c.post(f"/v1/sessions/{sid}/fork")
    assert r.status_code == 201, r.text
    fork = r.json()
    assert fork["steps"] == 6
    assert fork["session_id"].startswith(sid + ".")
    out_a = decode((await chunk(c, sid, a)).json()["output"])
    out_b = decode((await chunk(c, fork["session_id"], b)).json()["output"])
    np.testing.assert_allclose(
        np.concatenate([first, out_a]), oracle(np.concatenate([prefix, a])), atol=1e-5
    )
    np.testing.assert_allclose(
        np.concatenate([first, out_b]), oracle(np.concatenate([prefix, b])), atol=1e-5
    )
    # a fork of a fork keeps the root's id first (a load balancer hashes on it)
    r = await c.post(f"/v1/sessions/{fork['session_id']}/fork")
    assert r.json()["session_id"].split(".")[0] == sid
    assert (await c.post("/v1/sessions/nope/fork")).status_code == 404


async def test_lstm_state_round_trips(fresh_client: httpx.AsyncClient) -> None:
    c = fresh_client
    config = {"mode": "LSTM", "input_size": 3, "hidden_size": 5, "proj_size": 2}
    await c.post("/v1/models", json={"name": "l", "config": config})
    x = np.random.default_rng(3).standard_normal((8, 2, 3)).astype(np.float32)
    sid = await open_session(c, "l")
    first = decode((await chunk(c, sid, x[:3])).json()["output"])
    state = (await c.get(f"/v1/sessions/{sid}/state")).json()
    assert decode(state["h"]).shape == (1, 2, 2)
    assert decode(state["c"]).shape == (1, 2, 5)
    resumed = (await c.post("/v1/models/l/sessions", json={"state": state})).json()
    rest = decode((await chunk(c, resumed["session_id"], x[3:])).json()["output"])
    want, _, _ = forward(seeded_params(config), config, x)
    np.testing.assert_allclose(np.concatenate([first, rest]), want, atol=1e-5)


# --- exactly-once chunks --------------------------------------------------------------------


async def test_retries_are_answered_once_and_gaps_are_409(fresh_client: httpx.AsyncClient) -> None:
    c = fresh_client
    x = np.random.default_rng(4).standard_normal((9, 1, 10)).astype(np.float32)
    sid = await open_session(c)
    one = await chunk(c, sid, x[:3], start_step=0)
    again = await chunk(c, sid, x[:3], start_step=0)  # the retry of an applied chunk
    assert again.status_code == 200
    assert again.json() == one.json()
    assert again.json()["steps"] == 3
    assert (await c.get(f"/v1/sessions/{sid}")).json()["steps"] == 3  # not advanced twice
    # the same step with another body, a gap, and a stale step: 409 with the current step
    for body_x, start in ((x[3:6], 0), (x[6:9], 6), (x[3:6], 1)):
        r = await chunk(c, sid, body_x, start_step=start)
        assert r.status_code == 409, r.text
        assert r.json()["current_step"] == 3
        assert r.json()["type"].endswith("step-conflict")
    two = await chunk(c, sid, x[3:9], start_step=3)
    got = np.concatenate([decode(one.json()["output"]), decode(two.json()["output"])])
    np.testing.assert_allclose(got, oracle(x), atol=1e-5)
    metrics = (await c.get("/metrics")).text
    assert "rnn_serve_session_replays_total 1.0" in metrics
    r = await c.post(
        "/v1/models/default/forward", json={"input": b64(x), "start_step": 0}
    )  # stateless forwards have no steps
    assert r.status_code == 422


async def test_chaos_duplicates_and_out_of_order(fresh_client: httpx.AsyncClient) -> None:
    """A client that resends, reorders and skips chunks at random (as a flaky network and an
    eager retry loop would): whatever arrives, the state only ever advances by the next chunk,
    and the answers kept equal the oracle's forward over the whole stream."""
    c = fresh_client
    rng = np.random.default_rng(5)
    sizes = rng.integers(1, 6, 40)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    x = rng.standard_normal((int(starts[-1]), 2, 10)).astype(np.float32)
    sid = await open_session(c)
    answers: dict[int, np.ndarray] = {}
    applied = 0
    sent = replays = conflicts = 0
    while applied < len(sizes):
        # send a burst: the next chunk, duplicates of it, older ones and later ones, shuffled
        picks = [applied, applied, *rng.integers(max(0, applied - 3), len(sizes), 4)]
        rng.shuffle(picks)
        rs = await asyncio.gather(
            *(chunk(c, sid, x[starts[k] : starts[k + 1]], start_step=int(starts[k])) for k in picks)
        )
        for k, r in zip(picks, rs, strict=True):
            sent += 1
            if r.status_code == 409:
                conflicts += 1
                assert r.json()["current_step"] in starts
                continue
            assert r.status_code == 200, r.text
            out = decode(r.json()["output"])
            if int(k) in answers:
                replays += 1
                np.testing.assert_array_equal(out, answers[int(k)])
            answers[int(k)] = out
        while applied in answers:
            applied += 1
    got = np.concatenate([answers[k] for k in range(len(sizes))])
    np.testing.assert_allclose(got, oracle(x), atol=1e-5)
    assert (await c.get(f"/v1/sessions/{sid}")).json()["steps"] == starts[-1]
    assert replays > 0, (sent, replays, conflicts)
    assert conflicts > 0, (sent, replays, conflicts)


async def test_oip_sequences_take_start_step(fresh_client: httpx.AsyncClient) -> None:
    c = fresh_client
    x = np.random.default_rng(6).standard_normal((6, 10)).astype(np.float32)

    def body(part: np.ndarray, start: int, **params: Any) -> dict[str, Any]:
        return {
            "inputs": [{"name": "input", "shape": list(part.shape), "datatype": "FP32",
                        "data": part.ravel().tolist()}],
            "parameters": {"sequence_id": "s1", "start_step": start, **params},
        }  # fmt: skip

    first = await c.post("/v2/models/default/infer", json=body(x[:3], 0, sequence_start=True))
    assert first.status_code == 200, first.text
    again = await c.post("/v2/models/default/infer", json=body(x[:3], 0))
    assert again.json()["outputs"] == first.json()["outputs"]
    gap = await c.post("/v2/models/default/infer", json=body(x[3:], 4))
    assert gap.status_code == 409, gap.text
    assert gap.json()["current_step"] == 3, gap.text
    rest = await c.post("/v2/models/default/infer", json=body(x[3:], 3, sequence_end=True))
    outs = [next(o for o in r.json()["outputs"] if o["name"] == "output") for r in (first, rest)]
    got = np.concatenate([np.asarray(o["data"], np.float32).reshape(o["shape"]) for o in outs])
    np.testing.assert_allclose(got, oracle(x), atol=1e-5)


# --- sessions in Redis: any replica, exactly once, nothing lost -------------------------------
def redis_settings(redis: RedisServer, repo: Path, **overrides: Any) -> Any:
    return make_settings(model_repository=repo, session_store=redis.url, **overrides)


async def test_any_replica_serves_any_session_through_redis(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Two replicas on one Redis (and one repository). A session opened on A goes on on B, then
    on A again (its copy is behind: it reads the stored one), and survives A's restart with no
    shutdown at all: steps, kept answers and the state are exactly the stored ones."""
    repo = tmp_path / "shared"
    x = np.random.default_rng(7).standard_normal((16, 1, 10)).astype(np.float32)
    a_clients = open_client(redis_settings(redis_server, repo))
    a = await anext(a_clients)
    outs = []
    try:
        sid = await open_session(a)
        outs.append(decode((await chunk(a, sid, x[:4], start_step=0)).json()["output"]))
        async for b in open_client(redis_settings(redis_server, repo)):
            r = await chunk(b, sid, x[4:8], start_step=4)  # B has never seen it
            assert r.status_code == 200, r.text
            outs.append(decode(r.json()["output"]))
            assert (await a.get(f"/v1/sessions/{sid}")).json()["steps"] == 8
            r = await chunk(a, sid, x[8:12], start_step=8)  # A's copy was at step 4
            assert r.status_code == 200, r.text
            outs.append(decode(r.json()["output"]))
            r = await chunk(b, sid, x[8:12], start_step=8)  # a resend on B: the kept answer
            assert r.status_code == 200, r.text
            assert r.json()["steps"] == 12
            np.testing.assert_array_equal(decode(r.json()["output"]), outs[-1])
            metrics = (await b.get("/metrics")).text
            assert "rnn_serve_session_cache_misses_total 2.0" in metrics
            assert "rnn_serve_session_store_commits_total 1.0" in metrics
    finally:
        await a_clients.aclose()
    async for a2 in open_client(redis_settings(redis_server, repo)):  # A again, a new process
        r = await chunk(a2, sid, x[12:], start_step=12)
        assert r.status_code == 200, r.text
        outs.append(decode(r.json()["output"]))
        np.testing.assert_allclose(np.concatenate(outs), oracle(x), atol=1e-5)
        exported = (await a2.get(f"/v1/sessions/{sid}/state")).json()
        assert exported["steps"] == 16
        assert (await a2.delete(f"/v1/sessions/{sid}")).status_code == 204
        assert (await a2.get(f"/v1/sessions/{sid}")).status_code == 404


async def test_two_replicas_racing_one_step_exactly_one_commits(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Chunks of one session given to two replicas at once, from the same step: one commits,
    the other gets 409 step-conflict with the step the session is at now."""
    repo = tmp_path / "shared"
    x = np.random.default_rng(9).standard_normal((6, 1, 10)).astype(np.float32)
    async for a in open_client(redis_settings(redis_server, repo)):
        async for b in open_client(redis_settings(redis_server, repo)):
            for round_ in range(3):
                sid = await open_session(a)
                await chunk(a, sid, x[:2], start_step=0)
                assert (await b.get(f"/v1/sessions/{sid}")).json()["steps"] == 2  # cached on B
                ra, rb = await asyncio.gather(
                    chunk(a, sid, x[2:4], start_step=2), chunk(b, sid, x[2:4] + 1, start_step=2)
                )
                statuses = sorted([ra.status_code, rb.status_code])
                assert statuses == [200, 409], (round_, ra.text, rb.text)
                lost = ra if ra.status_code == 409 else rb
                assert lost.json()["type"].endswith("step-conflict")
                assert lost.json()["current_step"] == 4
                won = ra if ra.status_code == 200 else rb
                first = x[:4] if won is ra else np.concatenate([x[:2], x[2:4] + 1])
                r = await chunk(b, sid, x[4:], start_step=4)
                assert r.status_code == 200, r.text
                got = decode(r.json()["output"])
                np.testing.assert_allclose(
                    got, oracle(np.concatenate([first, x[4:]]))[4:], atol=1e-5
                )


async def test_redis_down_is_503_readiness_says_why_and_sessions_continue(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    x = np.random.default_rng(10).standard_normal((9, 1, 10)).astype(np.float32)
    settings = redis_settings(redis_server, tmp_path / "repo", session_store_timeout_s=0.5)
    async for c in open_client(settings):
        sid = await open_session(c)
        outs = [decode((await chunk(c, sid, x[:3], start_step=0)).json()["output"])]
        redis_server.stop(kill=True)
        r = await chunk(c, sid, x[3:6], start_step=3)
        assert r.status_code == 503, r.text
        assert r.json()["type"].endswith("session-store-unavailable")
        assert r.headers["retry-after"] == "1"
        assert (await c.post("/v1/models/default/sessions", json={})).status_code == 503

        async def not_ready(c: httpx.AsyncClient = c) -> bool:
            return (await c.get("/readyz")).status_code == 503

        await wait_for(not_ready, 5)  # readiness follows the store within a second or so
        assert "session store" in (await c.get("/readyz")).json()["detail"]
        redis_server.start()  # on its append-only file: every commit is back
        resend = functools.partial(chunk, c, sid, x[3:6], start_step=3)
        r = await eventually(resend, lambda r: r.status_code != 503, 5)
        assert r.status_code == 200, r.text
        outs.append(decode(r.json()["output"]))
        outs.append(decode((await chunk(c, sid, x[6:], start_step=6)).json()["output"]))
        np.testing.assert_allclose(np.concatenate(outs), oracle(x), atol=1e-5)
        await wait_ready(c)


async def test_sessions_in_redis_expire_count_and_keep_sequences(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Expiry is Redis's; RNN_SERVE_MAX_SESSIONS holds across replicas; another key's session
    is never found; an OIP sequence ended on one replica answers a resend of its end on another."""
    repo = tmp_path / "shared"
    x = np.random.default_rng(11).standard_normal((6, 10)).astype(np.float32)
    async for a in open_client(redis_settings(redis_server, repo, max_sessions=2)):
        async for b in open_client(redis_settings(redis_server, repo, max_sessions=2)):
            first = await open_session(a)
            await open_session(b)
            r = await a.post("/v1/models/default/sessions", json={})
            assert r.status_code == 429, r.text  # two are open, on either replica
            assert (await b.delete(f"/v1/sessions/{first}")).status_code == 204
            assert (await a.get(f"/v1/sessions/{first}")).status_code == 404

            def infer(k: int, **params: Any) -> dict[str, Any]:
                part = x[3 * k : 3 * k + 3]
                return {
                    "inputs": [{"name": "input", "shape": list(part.shape), "datatype": "FP32",
                                "data": part.ravel().tolist()}],
                    "parameters": {"sequence_id": "s1", "start_step": 3 * k, **params},
                }  # fmt: skip

            r = await a.post("/v2/models/default/infer", json=infer(0, sequence_start=True))
            assert r.status_code == 200, r.text
            end = infer(1, sequence_end=True)
            r1 = await b.post("/v2/models/default/infer", json=end)
            assert r1.status_code == 200, r1.text
            r2 = await a.post("/v2/models/default/infer", json=end)  # the end, resent elsewhere
            assert r2.status_code == 200, r2.text
            assert r2.json()["outputs"] == r1.json()["outputs"]
            r3 = await a.post("/v2/models/default/infer", json=infer(1))
            assert r3.status_code == 400  # ended: only a resend of its end is answered
    async for c in open_client(redis_settings(redis_server, repo, session_ttl_s=0.5)):
        sid = await open_session(c)
        await asyncio.sleep(0.8)
        assert (await c.get(f"/v1/sessions/{sid}")).status_code == 404  # Redis let it expire


async def test_a_stored_state_that_does_not_decode_is_409(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    import redis

    from service.sessions.redis_store import PREFIX, member

    async for a in open_client(redis_settings(redis_server, tmp_path / "repo")):
        sid = await open_session(a)
        key = f"{PREFIX}s:{member(sid, None)}"
        redis.Redis(port=redis_server.port).hset(key, "blob", b"not a safetensors file")
        async for b in open_client(redis_settings(redis_server, tmp_path / "repo")):
            r = await chunk(b, sid, np.ones((2, 1, 10), np.float32))
            assert r.status_code == 409, r.text
            assert r.json()["type"].endswith("state-mismatch")


async def test_memory_sessions_of_a_restarted_process_are_410(tmp_path: Path) -> None:
    """With sessions in memory, a restart ends them: an id this server made in its previous
    life is 410 (resume from an exported state); one it never made is 404."""
    repo = tmp_path / "repo"
    async for c in open_client(make_settings(model_repository=repo)):
        sid = await open_session(c)
    async for c in open_client(make_settings(model_repository=repo)):
        r = await chunk(c, sid, np.ones((2, 1, 10), np.float32))
        assert r.status_code == 410, r.text
        assert r.json()["type"].endswith("session-lost")
        assert "exported" in r.json()["detail"]
        assert (await c.get(f"/v1/sessions/{sid}")).status_code == 410
        assert (await c.get(f"/v1/sessions/{'S' * 40}")).status_code == 404
