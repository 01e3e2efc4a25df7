"""The model registry over HTTP: register, list, describe, forward, delete."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
import torch

from tests.support.helpers import b64, decode

pytestmark = pytest.mark.anyio

CONFIG = {"input_size": 4, "hidden_size": 3, "num_layers": 2, "nonlinearity": "relu", "seed": 42}


async def test_default_model_is_registered(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/models/default")
    assert r.status_code == 200
    info = r.json()
    assert info["config"]["input_size"] == 10
    assert info["config"]["hidden_size"] == 20
    assert info["config"]["num_layers"] == 2
    assert info["parameters"] == sum(p.numel() for p in torch.nn.RNN(10, 20, 2).parameters())
    assert info["device"] == "cpu"
    assert info["loaded"] is True  # warmed up before /readyz said ready
    assert [m["name"] for m in (await client.get("/v1/models")).json()["models"]] == ["default"]


async def test_register_forward_delete(fresh_client: httpx.AsyncClient) -> None:
    c = fresh_client
    r = await c.post("/v1/models", json={"name": "tiny", "config": CONFIG})
    assert r.status_code == 201, r.text
    assert r.json()["loaded"] is False
    assert (await c.post("/v1/models", json={"name": "tiny", "config": CONFIG})).status_code == 200
    conflict = await c.post("/v1/models", json={"name": "tiny", "config": {**CONFIG, "seed": 1}})
    assert conflict.status_code == 409
    assert conflict.headers["content-type"] == "application/problem+json"

    x = np.random.default_rng(0).standard_normal((3, 2, 4)).astype(np.float32)
    r = await c.post("/v1/models/tiny/forward", json={"input": b64(x), "output_encoding": "b64"})
    assert r.status_code == 200, r.text
    torch.manual_seed(42)
    rnn = torch.nn.RNN(4, 3, 2, nonlinearity="relu")
    with torch.no_grad():
        want, _ = rnn(torch.from_numpy(x))
    np.testing.assert_allclose(decode(r.json()["output"]), want.numpy(), atol=1e-6)
    assert (await c.get("/v1/models/tiny")).json()["loaded"] is True
    names = [m["name"] for m in (await c.get("/v1/models")).json()["models"]]
    assert names == ["default", "tiny"]

    assert (await c.delete("/v1/models/tiny")).status_code == 204
    assert (await c.get("/v1/models/tiny")).status_code == 404
    assert (await c.delete("/v1/models/tiny")).status_code == 404
    gone = await c.post("/v1/models/tiny/forward", json={"input": x.tolist()})
    assert gone.status_code == 404
    assert "tiny" in gone.json()["detail"]


@pytest.mark.parametrize("name", ["a/b", "..", "-lead", "x" * 65, "sp ace", ""])
async def test_invalid_model_names(fresh_client: httpx.AsyncClient, name: str) -> None:
    r = await fresh_client.post("/v1/models", json={"name": name, "config": CONFIG})
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["loc"] == ["body", "name"]


async def test_invalid_registration_config(fresh_client: httpx.AsyncClient) -> None:
    r = await fresh_client.post(
        "/v1/models", json={"name": "m", "config": {"input_size": 0, "hidden_size": 1}}
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["body", "config", "input_size"]
    assert (await fresh_client.get("/v1/models/m")).status_code == 404


async def test_model_name_pattern_in_path(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/models/bad%20name")
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["path", "name"]


async def test_unknown_model_forward_is_404(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/models/nope/forward", json={"input": [[0.0] * 10]})
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"


async def test_inline_configs_share_one_module(fresh_client: httpx.AsyncClient) -> None:
    """Many concurrent first requests for one new config build it once; key order is irrelevant."""
    config = {"input_size": 2, "hidden_size": 3, "seed": 5}
    reordered = {"seed": 5, "hidden_size": 3, "input_size": 2, "num_layers": 1}
    bodies = [{"config": config if i % 2 else reordered, "input": [[1.0, 2.0]]} for i in range(20)]
    answers = await asyncio.gather(*(fresh_client.post("/v1/rnn/forward", json=b) for b in bodies))
    assert {r.status_code for r in answers} == {200}
    assert len({r.json()["model"] for r in answers}) == 1
    metrics = (await fresh_client.get("/metrics")).text
    builds = [
        line
        for line in metrics.splitlines()
        if line.startswith('rnn_serve_registry_events_total{event="build"}')
    ]
    assert builds == ['rnn_serve_registry_events_total{event="build"} 2.0']  # default + this one
