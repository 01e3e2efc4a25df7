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
from tests.helpers import b64, decode
from tests.oracle import rnn_forward, seeded_params

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
) -> tuple[dict[str, Any], tuple]:
    rows = (2 if config.get("bidirectional") else 1) * config.get("num_layers", 1)
    size, hidden = config["input_size"], config["hidden_size"]
    seq_len = int(rng.integers(1, 9))
    batch = int(rng.integers(1, 4))
    if kind == 0:  # unbatched, with h0
        x = rng.standard_normal((seq_len, size)).astype(np.float32)
        h0 = rng.standard_normal((rows, hidden)).astype(np.float32)
        return {"input": b64(x), "h0": b64(h0), "output_encoding": "b64"}, (x, h0, None)
    shape = (batch, seq_len) if config.get("batch_first") else (seq_len, batch)
    x = rng.standard_normal((*shape, size)).astype(np.float32)
    if kind == 1:  # batched, no h0
        return {"input": b64(x), "output_encoding": "b64"}, (x, None, None)
    h0 = rng.standard_normal((rows, batch, hidden)).astype(np.float32)
    lengths = [int(n) for n in rng.integers(1, seq_len + 1, size=batch)]
    lengths[0] = seq_len
    rng.shuffle(lengths)
    return {"input": b64(x), "h0": b64(h0), "lengths": lengths, "output_encoding": "b64"}, (
        x,
        h0,
        lengths,
    )


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
    ],
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
    for r, (_, (x, h0, lengths)) in zip(good, cases, strict=True):
        want_out, want_hn = rnn_forward(params, config, x, h0, lengths)
        np.testing.assert_allclose(decode(r.json()["output"]), want_out, atol=1e-5)
        np.testing.assert_allclose(decode(r.json()["h_n"]), want_hn, atol=1e-5)
    after = _histogram((await c.get("/metrics")).text, "rnn_serve_batch_sequences")
    forwards, sequences = after[0] - before[0], after[1] - before[1]
    assert sequences == sum(
        1
        if x.ndim == 2
        else len(h0[0])
        if h0 is not None
        else x.shape[0 if config.get("batch_first") else 1]
        for _, (x, h0, _) in cases
    )
    assert forwards < len(cases), "no two requests were batched together"


async def test_batched_answers_equal_unbatched_ones(tmp_path: Any, anyio_backend: str) -> None:
    """The same requests through a server that never batches give the same answers (1e-6)."""
    config = {"input_size": 4, "hidden_size": 8, "num_layers": 2, "bidirectional": True}
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
