"""Deadlines cover compute, not only queueing: a forward past its deadline — the client's own
(X-Request-Timeout) or the server's cap — is 504, and its remaining time slices never run; a
session chunk past its deadline leaves the session's state as it was."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import make_settings, open_client
from tests.oracle import forward, seeded_params
from tests.support.helpers import b64, decode

pytestmark = pytest.mark.anyio

LONG = {"input_size": 1, "hidden_size": 256}  # 256 * 257 MACs a step
STEPS = 40_000  # ~2.6e9 MACs: seconds of one core, in slices of ~2e7 (a few ms each)


def long_body() -> dict[str, Any]:
    x = np.random.default_rng(0).standard_normal((STEPS, 1)).astype(np.float32)
    return {"config": LONG, "input": b64(x), "output_encoding": "b64"}


async def timesteps(c: httpx.AsyncClient) -> float:
    text = (await c.get("/metrics")).text
    match = re.search(r"^rnn_serve_timesteps_total ([0-9.e+]+)$", text, re.M)
    assert match is not None
    return float(match.group(1))


@pytest.fixture(scope="module")
async def client(anyio_backend: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(slice_macs=2e7, max_tensor_elements=50_000_000)
    async for c in open_client(settings):
        yield c


async def test_a_forward_past_its_deadline_is_504_and_stops(client: httpx.AsyncClient) -> None:
    before = await timesteps(client)
    r = await client.post("/v1/rnn/forward", json=long_body(),
                          headers={"X-Request-Timeout": "0.3"}, timeout=60)  # fmt: skip
    assert r.status_code == 504, r.text[:300]
    assert r.headers["content-type"] == "application/problem+json"
    assert "0.3s" in r.json()["detail"]
    assert "X-Request-Timeout" in r.json()["detail"]
    await asyncio.sleep(0.1)  # the slice running at the deadline finishes; no other starts
    ran = await timesteps(client) - before
    assert 0 < ran < STEPS * 0.8, ran  # some slices ran, not all
    await asyncio.sleep(0.5)
    assert await timesteps(client) - before == ran, "slices ran after the deadline"
    # and the server goes on serving
    r = await client.post("/v1/models/default/forward", json={"input": [[0.0] * 10]})
    assert r.status_code == 200


async def test_the_server_caps_the_clients_deadline(anyio_backend: str) -> None:
    settings = make_settings(slice_macs=2e7, request_timeout_s=0.3, max_tensor_elements=50_000_000)
    async for c in open_client(settings):
        r = await c.post("/v1/rnn/forward", json=long_body(),
                         headers={"X-Request-Timeout": "1000"}, timeout=60)  # fmt: skip
        assert r.status_code == 504, r.text[:300]  # the server's 0.3 s, not the client's 1000
        assert "deadline of 0.3s" in r.json()["detail"]
        # without the header, the server's deadline holds too
        r = await c.post("/v1/rnn/forward", json=long_body(), timeout=60)
        assert r.status_code == 504
        assert "RNN_SERVE_REQUEST_TIMEOUT_S" in r.json()["detail"]


async def test_v2_deadline_is_an_oip_error(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/models", json={"name": "long", "config": LONG})
    assert r.status_code in (200, 201), r.text
    x = np.zeros((STEPS, 1), dtype=np.float32)
    body = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                        "data": x.ravel().tolist()}]}  # fmt: skip
    r = await client.post("/v2/models/long/infer", json=body,
                          headers={"X-Request-Timeout": "0.2"}, timeout=60)  # fmt: skip
    assert r.status_code == 504, r.text[:300]
    assert set(r.json()) == {"error"}


@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan", "inf", ""])
async def test_a_bad_timeout_header_names_the_header(client: httpx.AsyncClient, value: str) -> None:
    r = await client.post("/v1/models/default/forward", json={"input": [[0.0] * 10]},
                          headers={"X-Request-Timeout": value})  # fmt: skip
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["errors"][0]["loc"] == ["header", "X-Request-Timeout"]
    assert "positive number of seconds" in problem["errors"][0]["msg"]
    r = await client.post("/v2/models/default/infer", headers={"X-Request-Timeout": value},
                          json={"inputs": [{"name": "input", "shape": [1, 10],
                                            "datatype": "FP32", "data": [0.0] * 10}]})  # fmt: skip
    assert r.status_code in (400, 422)
    assert "X-Request-Timeout" in r.json()["error"]


async def test_a_generous_deadline_changes_nothing(client: httpx.AsyncClient) -> None:
    x = np.random.default_rng(1).standard_normal((3, 2, 10)).astype(np.float32)
    r = await client.post("/v1/models/default/forward", json={"input": b64(x)},
                          headers={"X-Request-Timeout": "30"})  # fmt: skip
    assert r.status_code == 200
    want, _, _ = forward(seeded_params({"input_size": 10, "hidden_size": 20, "num_layers": 2}),
                         {"input_size": 10, "hidden_size": 20, "num_layers": 2}, x)  # fmt: skip
    np.testing.assert_allclose(np.asarray(r.json()["output"]), want, atol=1e-5)


async def test_a_chunk_past_its_deadline_leaves_the_session_as_it_was(
    client: httpx.AsyncClient,
) -> None:
    r = await client.post("/v1/models", json={"name": "streamed", "config": LONG})
    assert r.status_code in (200, 201), r.text
    sid = (await client.post("/v1/models/streamed/sessions", json={})).json()["session_id"]
    rng = np.random.default_rng(2)
    first = rng.standard_normal((5, 1)).astype(np.float32)
    r = await client.post(f"/v1/sessions/{sid}/forward", json={"input": b64(first)})
    assert r.status_code == 200
    long = rng.standard_normal((STEPS, 1)).astype(np.float32)
    r = await client.post(f"/v1/sessions/{sid}/forward", json={"input": b64(long)},
                          headers={"X-Request-Timeout": "0.2"}, timeout=60)  # fmt: skip
    assert r.status_code == 504, r.text[:300]
    assert "state is as it was" in r.json()["detail"]
    last = rng.standard_normal((4, 1)).astype(np.float32)
    r = await client.post(f"/v1/sessions/{sid}/forward",
                          json={"input": b64(last), "output_encoding": "b64"})  # fmt: skip
    assert r.status_code == 200, r.text
    # as if the timed-out chunk had never been sent
    want, h_n, _ = forward(seeded_params(LONG), LONG, np.concatenate([first, last]))
    np.testing.assert_allclose(decode(r.json()["output"]), want[5:], atol=1e-5)
    np.testing.assert_allclose(decode(r.json()["h_n"]), h_n, atol=1e-5)
