"""Time-sliced forwards equal unsliced ones (and the float64 oracle): every mode, batch_first,
unbatched, packed lengths that end in different slices, initial states, session chunks; and
while a long forward runs in slices, small requests are answered between them."""

from __future__ import annotations

import asyncio
import re
import zlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest

from tests.api.test_modes_oracle import check, make_request
from tests.conftest import make_settings, open_client
from tests.oracle import forward, seeded_params
from tests.support.helpers import TOLERANCE, b64, decode

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
async def sliced(anyio_backend: str) -> AsyncIterator[httpx.AsyncClient]:
    """A server that cuts every forward into slices of a few steps (tiny slice budget)."""
    async for c in open_client(make_settings(slice_macs=3000)):
        yield c


CONFIGS = [
    {"mode": "RNN", "input_size": 3, "hidden_size": 5, "num_layers": 2},
    {"mode": "RNN", "input_size": 3, "hidden_size": 5, "batch_first": True, "nonlinearity": "relu"},
    {"mode": "LSTM", "input_size": 3, "hidden_size": 5, "num_layers": 2, "proj_size": 2},
    {"mode": "LSTM", "input_size": 3, "hidden_size": 5, "batch_first": True, "bias": False},
    {"mode": "GRU", "input_size": 3, "hidden_size": 5, "num_layers": 2},
]
INPUT_MODES = ("batched+state+lengths", "unbatched+state", "batched")


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c['mode']}-{len(c)}")
@pytest.mark.parametrize("mode", INPUT_MODES)
async def test_sliced_forwards_equal_the_oracle(
    sliced: httpx.AsyncClient, config: dict[str, Any], mode: str
) -> None:
    rng = np.random.default_rng(zlib.crc32(f"{config}{mode}".encode()))
    body, want = make_request(config, mode, "b64", rng)
    r = await sliced.post("/v1/rnn/forward", json=body)
    assert r.status_code == 200, r.text
    check(r.json(), want, TOLERANCE["float32"])


async def test_long_ragged_batch_ends_sequences_in_different_slices(
    sliced: httpx.AsyncClient,
) -> None:
    config = {"mode": "LSTM", "input_size": 2, "hidden_size": 4, "num_layers": 2}
    rng = np.random.default_rng(7)
    x = rng.standard_normal((40, 5, 2)).astype(np.float32)
    h0 = rng.standard_normal((2, 5, 4)).astype(np.float32)
    c0 = rng.standard_normal((2, 5, 4)).astype(np.float32)
    lengths = [40, 1, 17, 23, 9]  # ending in the first, middle and last slices
    r = await sliced.post("/v1/rnn/forward", json={
        "config": config, "input": b64(x), "h0": b64(h0), "c0": b64(c0), "lengths": lengths,
        "output_encoding": "b64"})  # fmt: skip
    assert r.status_code == 200, r.text
    check(r.json(), forward(seeded_params(config), config, x, h0, c0, lengths), 1e-5)
    metrics = (await sliced.get("/metrics")).text
    count = next(
        ln for ln in metrics.splitlines() if ln.startswith("rnn_serve_batch_sequences_count")
    )
    assert float(count.split()[1]) > 5  # it really ran in several forwards


async def test_sliced_session_chunks_carry_the_state(anyio_backend: str) -> None:
    async for c in open_client(make_settings(slice_macs=3000)):
        config = {"mode": "GRU", "input_size": 3, "hidden_size": 6, "num_layers": 2}
        await c.post("/v1/models", json={"name": "g", "config": config})
        x = np.random.default_rng(3).standard_normal((90, 2, 3)).astype(np.float32)
        sid = (await c.post("/v1/models/g/sessions", json={})).json()["session_id"]
        outs = []
        for lo, hi in ((0, 31), (31, 32), (32, 90)):
            r = await c.post(f"/v1/sessions/{sid}/forward",
                             json={"input": b64(x[lo:hi]), "output_encoding": "b64"})  # fmt: skip
            assert r.status_code == 200, r.text
            outs.append(decode(r.json()["output"]))
        want, h_n, _ = forward(seeded_params(config), config, x)
        np.testing.assert_allclose(np.concatenate(outs), want, atol=1e-5)
        np.testing.assert_allclose(decode(r.json()["h_n"]), h_n, atol=1e-5)


def _executions(metrics: str, model: str) -> float:
    found = re.search(
        rf'^rnn_serve_model_executions_total{{model="{model}"}} (\S+)$', metrics, re.M
    )
    return float(found.group(1)) if found else 0.0


async def test_small_requests_are_served_between_the_slices_of_a_long_forward(
    anyio_backend: str,
) -> None:
    """Order and counts, not time: once the long forward (some 90 slices) has run a slice, small
    requests sent meanwhile are answered while it still runs, and its slices go on between
    them. Unsliced, none would be answered before it ends. (The latencies this buys are
    measured by bench/fairness.py, against a real server.)"""
    settings = make_settings(slice_macs=5e7, max_tensor_elements=50_000_000)
    async for c in open_client(settings):
        config = {"input_size": 1, "hidden_size": 384}
        steps = 30_000  # 384 * 385 * 30000 = 4.4e9 MACs: ~90 slices of 5e7
        x = np.random.default_rng(0).standard_normal((steps, 1)).astype(np.float32)
        long = asyncio.create_task(c.post("/v1/rnn/forward", timeout=120, json={
            "config": config, "input": b64(x), "output_encoding": "b64"}))  # fmt: skip
        while not long.done() and _executions((await c.get("/metrics")).text, "inline") < 1:  # noqa: ASYNC110
            await asyncio.sleep(0.005)  # until its first slice has run (a metric, not an event)
        slices_seen = []  # the long forward's slices run so far, as each small one is answered
        while not long.done():
            r = await c.post("/v1/models/default/forward", json={"input": [[0.0] * 10]})
            assert r.status_code == 200
            if not long.done():
                slices_seen.append(_executions((await c.get("/metrics")).text, "inline"))
        answer = await long
        assert answer.status_code == 200, answer.text[:300]
        assert len(slices_seen) >= 3, slices_seen  # answered while the long one ran
        assert len(set(slices_seen)) >= 2, slices_seen  # and its slices went on in between
        assert _executions((await c.get("/metrics")).text, "inline") > 50  # it ran in slices
        out = decode(answer.json()["output"])
        assert out.shape == (steps, 384)
        # its answer is the unsliced one: every step against the float64 oracle
        want, h_n, _ = forward(seeded_params(config), config, x)
        np.testing.assert_allclose(out, want, atol=1e-4)
        np.testing.assert_allclose(decode(answer.json()["h_n"]), h_n, atol=1e-4)
