"""Streaming sessions: chunks equal one forward over their concatenation; order, batching and
the lifecycle (expiry, caps, model deletion, re-upload)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import torch
from safetensors.torch import save

from tests.conftest import make_settings, open_client
from tests.oracle import forward, full_config, rnn_forward, seeded_params
from tests.support.helpers import b64, chunk, decode, open_session

pytestmark = pytest.mark.anyio


def split(total: int, rng: np.random.Generator) -> list[int]:
    cuts: list[int] = []
    at = 0
    while at < total:
        n = min(total - at, int(rng.integers(1, 120)))
        cuts.append(n)
        at += n
    return cuts


@pytest.mark.parametrize(
    ("config", "shape"),
    [
        ({"input_size": 3, "hidden_size": 8, "num_layers": 3}, "batched"),
        (
            {
                "input_size": 3,
                "hidden_size": 8,
                "num_layers": 2,
                "batch_first": True,
                "nonlinearity": "relu",
            },
            "batched",
        ),
        ({"input_size": 3, "hidden_size": 8, "num_layers": 2}, "unbatched"),
    ],
)
async def test_1000_steps_in_random_chunks_equal_one_forward(
    fresh_client: httpx.AsyncClient, config: dict[str, Any], shape: str
) -> None:
    c = fresh_client
    await c.post("/v1/models", json={"name": "s", "config": config})
    rng = np.random.default_rng(42)
    steps, batch = 1000, 2
    bf = config.get("batch_first", False)
    if shape == "unbatched":
        x = rng.standard_normal((steps, 3)).astype(np.float32)
        h0 = rng.standard_normal((config["num_layers"], 8)).astype(np.float32)
    else:
        x = rng.standard_normal((batch, steps, 3) if bf else (steps, batch, 3)).astype(np.float32)
        h0 = rng.standard_normal((config["num_layers"], batch, 8)).astype(np.float32)
    whole = (
        await c.post(
            "/v1/models/s/forward", json={"input": b64(x), "h0": b64(h0), "output_encoding": "b64"}
        )
    ).json()
    sid = await open_session(c, "s", h0=b64(h0))
    outs, at = [], 0
    for n in split(steps, rng):
        part = x[:, at : at + n] if (bf and shape == "batched") else x[at : at + n]
        r = await chunk(c, sid, np.ascontiguousarray(part))
        assert r.status_code == 200, r.text
        outs.append(decode(r.json()["output"]))
        last = r.json()
        at += n
    streamed = np.concatenate(outs, axis=1 if (bf and shape == "batched") else 0)
    np.testing.assert_allclose(streamed, decode(whole["output"]), atol=1e-6)
    np.testing.assert_allclose(decode(last["h_n"]), decode(whole["h_n"]), atol=1e-6)
    want_out, want_hn = rnn_forward(seeded_params(config), config, x, h0)
    np.testing.assert_allclose(streamed, want_out, atol=1e-5)
    np.testing.assert_allclose(decode(last["h_n"]), want_hn, atol=1e-5)
    assert last["steps"] == steps
    assert (await c.get(f"/v1/sessions/{sid}")).json()["steps"] == steps


async def test_concurrent_chunks_of_one_session_run_in_order(
    fresh_client: httpx.AsyncClient,
) -> None:
    c = fresh_client
    x = np.random.default_rng(1).standard_normal((40, 1, 10)).astype(np.float32)
    sid = await open_session(c, "default", batch_size=1)
    answers = await asyncio.gather(*(chunk(c, sid, x[i * 4 : i * 4 + 4]) for i in range(10)))
    streamed = np.concatenate([decode(r.json()["output"]) for r in answers])
    assert [r.json()["steps"] for r in answers] == list(range(4, 41, 4))
    whole = (
        await c.post("/v1/models/default/forward", json={"input": b64(x), "output_encoding": "b64"})
    ).json()
    np.testing.assert_allclose(streamed, decode(whole["output"]), atol=1e-6)


async def test_64_sessions_are_served_in_batches(fresh_client: httpx.AsyncClient) -> None:
    c = fresh_client
    rng = np.random.default_rng(2)
    sids = [await open_session(c, "default") for _ in range(64)]
    xs = [rng.standard_normal((3, 1, 10)).astype(np.float32) for _ in sids]

    def forwards(text: str) -> float:
        return next(
            float(ln.split()[-1])
            for ln in text.splitlines()
            if ln.startswith("rnn_serve_batch_sequences_count")
        )

    before = forwards((await c.get("/metrics")).text)
    for _ in range(2):
        answers = await asyncio.gather(*(chunk(c, s, x) for s, x in zip(sids, xs, strict=True)))
        assert {r.status_code for r in answers} == {200}
    ran = forwards((await c.get("/metrics")).text) - before
    assert ran < 128, "session chunks were not batched"
    # each session's state is its own: the second chunk continued from the first
    twice = np.concatenate([xs[5], xs[5]])
    alone = (
        await c.post(
            "/v1/models/default/forward", json={"input": b64(twice), "output_encoding": "b64"}
        )
    ).json()
    np.testing.assert_allclose(decode(answers[5].json()["h_n"]), decode(alone["h_n"]), atol=1e-6)
    metrics = (await c.get("/metrics")).text
    assert "rnn_serve_open_sessions 64.0" in metrics
    assert "rnn_serve_session_chunk_seconds_count 128.0" in metrics


async def test_bidirectional_models_cannot_stream(fresh_client: httpx.AsyncClient) -> None:
    await fresh_client.post(
        "/v1/models",
        json={"name": "bi", "config": {"input_size": 2, "hidden_size": 3, "bidirectional": True}},
    )
    r = await fresh_client.post("/v1/models/bi/sessions", json={})
    assert r.status_code == 422
    assert "bidirectional and cannot stream" in r.json()["detail"]


async def test_unknown_closed_and_mismatched(fresh_client: httpx.AsyncClient) -> None:
    c = fresh_client
    assert (await chunk(c, "nope", np.zeros((1, 10), np.float32))).status_code == 404
    assert (await c.get("/v1/sessions/nope")).status_code == 404
    assert (await c.post("/v1/models/nope/sessions", json={})).status_code == 404
    sid = await open_session(c, "default", batch_size=2)
    r = await chunk(c, sid, np.zeros((3, 1, 10), np.float32))
    assert r.status_code == 422
    assert "streams batches of 2, got a batch of 1" in r.json()["detail"]
    bad_h0 = await c.post("/v1/models/default/sessions", json={"h0": [[0.0] * 19] * 2})
    assert bad_h0.status_code == 422
    assert (await c.delete(f"/v1/sessions/{sid}")).status_code == 204
    assert (await c.delete(f"/v1/sessions/{sid}")).status_code == 404
    assert (await chunk(c, sid, np.zeros((3, 2, 10), np.float32))).status_code == 404


@pytest.fixture
async def short_lived(anyio_backend: str) -> AsyncIterator[httpx.AsyncClient]:
    async for c in open_client(make_settings(session_ttl_s=0.3, max_sessions=2)):
        yield c


async def test_expiry_and_cap(short_lived: httpx.AsyncClient) -> None:
    c = short_lived
    first = await open_session(c, "default")
    await open_session(c, "default")
    full = await c.post("/v1/models/default/sessions", json={})
    assert full.status_code == 429
    assert full.headers["retry-after"]
    info = (await c.get(f"/v1/sessions/{first}")).json()
    assert info["expires_at"].endswith("+00:00")
    await asyncio.sleep(0.5)
    assert (await c.get(f"/v1/sessions/{first}")).status_code == 404
    await open_session(c, "default")  # expired ones no longer count


async def test_model_deletion_and_reupload_end_sessions(tmp_path: Path, anyio_backend: str) -> None:
    async for c in open_client(make_settings(model_repository=tmp_path / "r")):
        config = {"input_size": 2, "hidden_size": 3}
        await c.post("/v1/models", json={"name": "m", "config": config})
        sid = await open_session(c, "m")
        assert (await chunk(c, sid, np.ones((2, 2), np.float32))).status_code == 200
        torch.manual_seed(1)
        blob = save(torch.nn.RNN(2, 3).state_dict())
        await c.put(
            "/v1/models/m/weights",
            content=blob,
            headers={"content-type": "application/octet-stream"},
        )
        r = await chunk(c, sid, np.ones((2, 2), np.float32))
        assert r.status_code == 409
        assert "was ended" in r.json()["detail"]
        assert (await c.get(f"/v1/sessions/{sid}")).status_code == 404
        sid = await open_session(c, "m")
        assert (await c.delete("/v1/models/m")).status_code == 204
        assert (await chunk(c, sid, np.ones((2, 2), np.float32))).status_code == 404
        assert (await c.get(f"/v1/sessions/{sid}")).status_code == 404


async def test_oip_sequence_parameters_map_onto_sessions(fresh_client: httpx.AsyncClient) -> None:
    c = fresh_client
    x = np.random.default_rng(3).standard_normal((9, 2, 10)).astype(np.float32)
    outs = []
    for i, (a, b) in enumerate(((0, 4), (4, 5), (5, 9))):
        part = np.ascontiguousarray(x[a:b])
        params = {"sequence_id": 77, "sequence_start": i == 0, "sequence_end": i == 2}
        body = {
            "parameters": params,
            "inputs": [
                {
                    "name": "input",
                    "shape": list(part.shape),
                    "datatype": "FP32",
                    "data": part.ravel().tolist(),
                }
            ],
        }
        r = await c.post("/v2/models/default/infer", json=body)
        assert r.status_code == 200, r.text
        out = next(o for o in r.json()["outputs"] if o["name"] == "output")
        outs.append(np.asarray(out["data"]).reshape(out["shape"]))
    whole = (
        await c.post("/v1/models/default/forward", json={"input": b64(x), "output_encoding": "b64"})
    ).json()
    np.testing.assert_allclose(np.concatenate(outs), decode(whole["output"]), atol=1e-6)
    after_end = await c.post(
        "/v2/models/default/infer",
        content=orjson.dumps(
            {
                "parameters": {"sequence_id": 77},
                "inputs": [
                    {"name": "input", "shape": [1, 10], "datatype": "FP32", "data": [0.0] * 10}
                ],
            }
        ),
        headers={"content-type": "application/json"},
    )
    assert after_end.status_code == 400
    assert "not open" in after_end.json()["error"]


@pytest.mark.parametrize(
    ("config", "shape"),
    [
        ({"mode": "LSTM", "input_size": 3, "hidden_size": 8, "num_layers": 2}, "batched"),
        ({"mode": "LSTM", "input_size": 3, "hidden_size": 8, "proj_size": 4, "batch_first": True},
         "batched"),
        ({"mode": "LSTM", "input_size": 3, "hidden_size": 8, "num_layers": 2}, "unbatched"),
        ({"mode": "GRU", "input_size": 3, "hidden_size": 8, "num_layers": 2}, "batched"),
        ({"mode": "GRU", "input_size": 3, "hidden_size": 8}, "unbatched"),
    ],
    ids=["lstm", "lstm-proj-bf", "lstm-unbatched", "gru", "gru-unbatched"],
)  # fmt: skip
async def test_lstm_and_gru_sessions_carry_their_whole_state(
    fresh_client: httpx.AsyncClient, config: dict[str, Any], shape: str
) -> None:
    """An LSTM session holds h and c; 300 steps in random chunks equal one forward (and the
    oracle), c_n included."""
    c = fresh_client
    await c.post("/v1/models", json={"name": "s", "config": config})
    full = full_config(config)
    rng = np.random.default_rng(7)
    steps, batch, layers = 300, 2, full["num_layers"]
    bf = full["batch_first"] and shape == "batched"
    lead = (layers,) if shape == "unbatched" else (layers, batch)
    if shape == "unbatched":
        x = rng.standard_normal((steps, 3)).astype(np.float32)
    else:
        x = rng.standard_normal((batch, steps, 3) if bf else (steps, batch, 3)).astype(np.float32)
    h0 = rng.standard_normal((*lead, full["proj_size"] or 8)).astype(np.float32)
    state = {"h0": b64(h0)}
    c0 = None
    if full["mode"] == "LSTM":
        c0 = rng.standard_normal((*lead, 8)).astype(np.float32)
        state["c0"] = b64(c0)
    whole = (
        await c.post(
            "/v1/models/s/forward", json={"input": b64(x), **state, "output_encoding": "b64"}
        )
    ).json()
    sid = await open_session(c, "s", **state)
    outs, at = [], 0
    for n in split(steps, rng):
        part = x[:, at : at + n] if bf else x[at : at + n]
        r = await chunk(c, sid, np.ascontiguousarray(part))
        assert r.status_code == 200, r.text
        outs.append(decode(r.json()["output"]))
        last = r.json()
        at += n
    streamed = np.concatenate(outs, axis=1 if bf else 0)
    want_out, want_hn, want_cn = forward(seeded_params(config), config, x, h0, c0)
    np.testing.assert_allclose(streamed, decode(whole["output"]), atol=1e-6)
    np.testing.assert_allclose(streamed, want_out, atol=1e-5)
    np.testing.assert_allclose(decode(last["h_n"]), want_hn, atol=1e-5)
    if want_cn is None:
        assert "c_n" not in last
    else:
        np.testing.assert_allclose(decode(last["c_n"]), decode(whole["c_n"]), atol=1e-6)
        np.testing.assert_allclose(decode(last["c_n"]), want_cn, atol=1e-5)
    assert last["steps"] == steps


async def test_lstm_session_state_rules(fresh_client: httpx.AsyncClient) -> None:
    c = fresh_client
    config = {"mode": "LSTM", "input_size": 3, "hidden_size": 4, "proj_size": 2}
    await c.post("/v1/models", json={"name": "s", "config": config})
    only_h0 = await c.post("/v1/models/s/sessions", json={"h0": [[0.0, 0.0]]})
    assert only_h0.status_code == 422
    assert only_h0.json()["errors"][0]["loc"] == ["body", "c0"]
    wrong_c = await c.post("/v1/models/s/sessions", json={"h0": [[0.0, 0.0]], "c0": [[0.0, 0.0]]})
    assert wrong_c.status_code == 422
    assert "Expected hidden[1] size (1, 4), got [1, 2]" in wrong_c.text
    ok = await c.post("/v1/models/s/sessions", json={"h0": [[0.0, 0.0]], "c0": [[0.0] * 4]})
    assert ok.status_code == 201, ok.text
