"""Dynamic batching: concurrent mixed requests are joined, and each caller gets exactly what it
would get alone (checked against the NumPy oracle); bad requests never fail a batch."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import make_settings, open_client
from tests.oracle import forward, full_config, rnn_forward, seeded_params
from tests.support.helpers import b64, decode

pytestmark = pytest.mark.anyio


def _histogram(metrics: str, name: str) -> tuple[float, float]:
    values = dict(
        line.rsplit(" ", 1)
        for line in metrics.splitlines()
        if line.startswith(name) and "{" not in line
    )
    return float(values[f"{name}_count"]), float(values[f"{name}_sum"])


def _request(
    config: dict[str, Any], rng: np.random.Generator, kind: int
) -> tuple[dict[str, Any], tuple[Any, ...]]:
    """A request of one of three kinds, and (x, h0, c0, lengths) for the oracle."""
    c = full_config(config)
    rows = (2 if c["bidirectional"] else 1) * c["num_layers"]
    size, h_size, lstm = c["input_size"], c["proj_size"] or c["hidden_size"], c["mode"] == "LSTM"
    seq_len = int(rng.integers(1, 9))
    batch = int(rng.integers(1, 4))

    def state(*batch_dims: int) -> dict[str, Any]:
        h0 = rng.standard_normal((rows, *batch_dims, h_size)).astype(np.float32)
        if not lstm:
            return {"h0": h0}
        return {"h0": h0, "c0": rng.standard_normal((rows, *batch_dims, c["hidden_size"]))
                .astype(np.float32)}  # fmt: skip

    if kind == 0:  # unbatched, with the initial state
        x = rng.standard_normal((seq_len, size)).astype(np.float32)
        s0 = state()
        one: dict[str, Any] = {"input": b64(x), **{k: b64(v) for k, v in s0.items()},
                               "output_encoding": "b64"}  # fmt: skip
        return one, (x, s0["h0"], s0.get("c0"), None)
    shape = (batch, seq_len) if c["batch_first"] else (seq_len, batch)
    x = rng.standard_normal((*shape, size)).astype(np.float32)
    if kind == 1:  # batched, no initial state
        return {"input": b64(x), "output_encoding": "b64"}, (x, None, None, None)
    s0 = state(batch)
    lengths = [int(n) for n in rng.integers(1, seq_len + 1, size=batch)]
    lengths[0] = seq_len
    rng.shuffle(lengths)
    body = {"input": b64(x), **{k: b64(v) for k, v in s0.items()}, "lengths": lengths,
            "output_encoding": "b64"}  # fmt: skip
    return body, (x, s0["h0"], s0.get("c0"), lengths)


@pytest.mark.parametrize(
    "config",
    [
        {"input_size": 3, "hidden_size": 5, "num_layers": 2},
        {
            "input_size": 3,
            "hidden_size": 5,
            "num_layers": 2,
            "batch_first": True,
            "bidirectional": True,
        },
        {
            "input_size": 2,
            "hidden_size": 4,
            "nonlinearity": "relu",
            "bias": False,
            "batch_first": True,
        },
        {"mode": "LSTM", "input_size": 3, "hidden_size": 5, "num_layers": 2, "proj_size": 3},
        {
            "mode": "LSTM",
            "input_size": 2,
            "hidden_size": 4,
            "batch_first": True,
            "bidirectional": True,
        },
        {"mode": "GRU", "input_size": 3, "hidden_size": 5, "num_layers": 2, "bias": False},
    ],
    ids=["rnn", "rnn-bf-bidir", "rnn-relu-nobias", "lstm-proj", "lstm-bf-bidir", "gru"],
)
async def test_concurrent_mixed_requests_match_the_oracle(
    fresh_client: httpx.AsyncClient, config: dict[str, Any]
) -> None:
    c = fresh_client
    await c.post("/v1/models", json={"name": "m", "config": config})
    rng = np.random.default_rng(len(str(config)))
    cases = [_request(config, rng, i % 3) for i in range(60)]
    bad = {"input": [[0.0] * (config["input_size"] + 1)]}  # wrong input_size: 422 before queueing
    bodies = [body for body, _ in cases]
    for i in range(0, 60, 10):
        bodies.insert(i, bad)
    before = _histogram((await c.get("/metrics")).text, "rnn_serve_batch_sequences")
    answers = await asyncio.gather(*(c.post("/v1/models/m/forward", json=b) for b in bodies))
    good = [r for r, b in zip(answers, bodies, strict=True) if b is not bad]
    assert {r.status_code for r, b in zip(answers, bodies, strict=True) if b is bad} == {422}
    assert all(r.status_code == 200 for r in good), [r.text for r in good if r.status_code != 200]
    params = seeded_params(config)
    for r, (_, (x, h0, c0, lengths)) in zip(good, cases, strict=True):
        want_out, want_hn, want_cn = forward(params, config, x, h0, c0, lengths)
        np.testing.assert_allclose(decode(r.json()["output"]), want_out, atol=1e-5)
        np.testing.assert_allclose(decode(r.json()["h_n"]), want_hn, atol=1e-5)
        if want_cn is not None:  # the cell states are joined and split like the hidden ones
            np.testing.assert_allclose(decode(r.json()["c_n"]), want_cn, atol=1e-5)
    after = _histogram((await c.get("/metrics")).text, "rnn_serve_batch_sequences")
    forwards, sequences = after[0] - before[0], after[1] - before[1]
    assert sequences == sum(
        1
        if x.ndim == 2
        else len(h0[0])
        if h0 is not None
        else x.shape[0 if config.get("batch_first") else 1]
        for _, (x, h0, _, _) in cases
    )
    assert forwards < len(cases), "no two requests were batched together"


@pytest.mark.parametrize("mode", ["RNN", "LSTM", "GRU"])
async def test_batched_answers_equal_unbatched_ones(
    tmp_path: Any, anyio_backend: str, mode: str
) -> None:
    """The same requests through a server that never batches give the same answers (1e-6)."""
    config = {"mode": mode, "input_size": 4, "hidden_size": 8, "num_layers": 2,
              "bidirectional": True}  # fmt: skip
    rng = np.random.default_rng(7)
    bodies = [_request(config, rng, i % 3)[0] for i in range(30)]

    async def answers(max_batch: int) -> list[dict[str, Any]]:
        async for c in open_client(make_settings(max_batch_sequences=max_batch)):
            await c.post("/v1/models", json={"name": "m", "config": config})
            got = await asyncio.gather(*(c.post("/v1/models/m/forward", json=b) for b in bodies))
            return [r.json() for r in got]
        raise AssertionError("unreachable")

    alone, batched = await answers(1), await answers(256)
    for a, b in zip(alone, batched, strict=True):
        np.testing.assert_allclose(decode(a["output"]), decode(b["output"]), atol=1e-6)
        np.testing.assert_allclose(decode(a["h_n"]), decode(b["h_n"]), atol=1e-6)
        assert ("c_n" in a) == ("c_n" in b) == (mode == "LSTM")
        if mode == "LSTM":
            np.testing.assert_allclose(decode(a["c_n"]), decode(b["c_n"]), atol=1e-6)


@pytest.fixture
async def tiny_queue_client(anyio_backend: str) -> AsyncIterator[httpx.AsyncClient]:
    async for c in open_client(make_settings(max_queue=2)):
        yield c


async def test_full_queue_answers_429_with_retry_after(
    tiny_queue_client: httpx.AsyncClient,
) -> None:
    body = {"input": np.zeros((50, 4, 10)).tolist()}
    answers = await asyncio.gather(
        *(tiny_queue_client.post("/v1/models/default/forward", json=body) for _ in range(30))
    )
    statuses = [r.status_code for r in answers]
    assert set(statuses) == {200, 429}
    refused = next(r for r in answers if r.status_code == 429)
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["content-type"] == "application/problem+json"
    assert "RNN_SERVE_MAX_QUEUE" in refused.json()["detail"]


async def test_random_interleaving_of_models(fresh_client: httpx.AsyncClient) -> None:
    """Requests for several models and inline configs interleaved: each goes to its own model."""
    c = fresh_client
    configs = {f"m{i}": {"input_size": 3, "hidden_size": 4, "seed": i} for i in range(3)}
    for name, config in configs.items():
        await c.post("/v1/models", json={"name": name, "config": config})
    x = np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32)
    plan = [random.Random(1).choice([*configs, "inline"]) for _ in range(40)]

    def call(target: str) -> Any:
        if target == "inline":
            return c.post(
                "/v1/rnn/forward",
                json={"config": configs["m1"], "input": b64(x), "output_encoding": "b64"},
            )
        return c.post(
            f"/v1/models/{target}/forward", json={"input": b64(x), "output_encoding": "b64"}
        )

    answers = await asyncio.gather(*(call(t) for t in plan))
    for target, r in zip(plan, answers, strict=True):
        config = configs["m1" if target == "inline" else target]
        want, _ = rnn_forward(seeded_params(config), config, x)
        np.testing.assert_allclose(decode(r.json()["output"]), want, atol=1e-5)
