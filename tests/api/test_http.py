"""HTTP-level behaviour: problem+json for every failure, content types, body limits, health."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.conftest import make_settings, open_client

pytestmark = pytest.mark.anyio


def is_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert set(body) == {"type", "title", "status", "detail", "errors"}
    assert body["status"] == status
    assert "Traceback" not in r.text
    return body


async def test_health_and_ready(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ready"}


async def test_metrics_exposed(client: httpx.AsyncClient) -> None:
    await client.post("/v1/models/default/forward", json={"input": [[0.0] * 10]})
    text = (await client.get("/metrics")).text
    assert "rnn_serve_batch_sequences_bucket" in text
    assert (
        'rnn_serve_requests_total{method="POST",protocol="http",route="/v1/models/{name}/forward",status="200"}'
        in text
    )


async def test_invalid_json_is_400(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/rnn/forward", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert "not valid JSON" in is_problem(r, 400)["detail"]


async def test_nan_literal_is_400(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/models/default/forward",
        content=b'{"input": [[NaN]]}',
        headers={"content-type": "application/json"},
    )
    is_problem(r, 400)


async def test_wrong_content_type_is_415(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/rnn/forward",
        content=b"input=1",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert "application/json" in is_problem(r, 415)["detail"]


async def test_body_not_an_object_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/rnn/forward", json=[1, 2, 3])
    is_problem(r, 422)


async def test_unknown_field_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/models/default/forward", json={"input": [[0.0] * 10], "h_0": None})
    assert is_problem(r, 422)["errors"][0]["loc"] == ["body", "h_0"]


async def test_unknown_route_and_method(client: httpx.AsyncClient) -> None:
    is_problem(await client.get("/v1/nothing"), 404)
    is_problem(await client.put("/v1/rnn/forward"), 405)


@pytest.fixture
async def small_limit_client(anyio_backend: str) -> AsyncIterator[httpx.AsyncClient]:
    async for c in open_client(make_settings(max_body_bytes=1000)):
        yield c


async def test_body_over_limit_is_413_from_content_length(
    small_limit_client: httpx.AsyncClient,
) -> None:
    r = await small_limit_client.post(
        "/v1/models/default/forward", json={"input": [[0.0] * 10] * 100}
    )
    assert "limit is 1000" in is_problem(r, 413)["detail"]


async def test_streamed_body_over_limit_is_413(small_limit_client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"input": ['
        for _ in range(100):
            yield b"[0,0,0,0,0,0,0,0,0,0],"
        yield b"[0,0,0,0,0,0,0,0,0,0]]}"

    r = await small_limit_client.post(
        "/v1/models/default/forward", content=chunks(), headers={"content-type": "application/json"}
    )
    is_problem(r, 413)
    # the service is still fine afterwards
    ok = await small_limit_client.post("/v1/models/default/forward", json={"input": [[0.0] * 10]})
    assert ok.status_code == 200
