"""Swagger UI and ReDoc fill a request from its schema's example: every request schema has one,
and each is answered 2xx by the route it documents (the seed forward, an inline forward, a
registration, a session opening and chunk, an OIP infer)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.anyio


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = spec["components"]["schemas"][name]
    return schema


async def test_every_request_example_is_accepted(fresh_client: httpx.AsyncClient) -> None:
    c = fresh_client
    spec = (await c.get("/openapi.json")).json()
    session = (await c.post("/v1/models/default/sessions", json={})).json()["session_id"]
    tried = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" not in content:
                continue
            schema = _resolve(spec, content["application/json"]["schema"])
            examples = schema.get("examples")
            assert examples, f"{method.upper()} {path}: its request schema has no example"
            url = path.replace("{name}", "default").replace("{session_id}", session)
            url = url.replace("{version}", "1")
            for example in examples:
                r = await c.request(method, url, json=example)
                assert r.status_code < 300, (path, example, r.text)
                tried.append(path)
    assert {"/v1/rnn/forward", "/v1/models", "/v2/models/{name}/infer"} <= set(tried), tried
    assert any("sessions" in p for p in tried), tried


async def test_the_home_page_says_what_the_server_is(fresh_client: httpx.AsyncClient) -> None:
    c = fresh_client
    await c.post("/v1/models", json={"name": "my-lstm",
                                     "config": {"mode": "LSTM", "input_size": 3, "hidden_size": 4}})  # fmt: skip
    page = await c.get("/", headers={"accept": "text/html,application/xhtml+xml"})
    assert page.headers["content-type"].startswith("text/html")
    text = page.text
    assert "inference server for PyTorch recurrent networks" in text
    assert "<strong>ready</strong>" in text
    assert "<code>default</code>: RNN, input 10, hidden 20, 2 layer(s)" in text
    assert "<code>my-lstm</code>: LSTM" in text
    for link in ("/docs", "/redoc", "/openapi.json", "/healthz", "/readyz", "/metrics"):
        assert f'<a href="{link}">' in text
    assert (await c.get("/")).json()["docs"] == "/docs"  # a program still gets the links


async def test_the_home_page_lists_no_models_to_anyone_where_keys_are_needed(
    anyio_backend: str,
) -> None:
    from tests.conftest import make_settings, open_client

    async for c in open_client(make_settings(inference_keys=["k" * 32])):
        text = (await c.get("/", headers={"accept": "text/html"})).text
        assert "<code>default</code>:" not in text
        assert "with an API key" in text
