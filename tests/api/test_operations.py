"""Operations: request ids, structured logs, metrics for every stage."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from service.core.logs import ACCESS

pytestmark = pytest.mark.anyio


@pytest.fixture
def access_lines(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The access log's lines, as its writer would format them."""
    ACCESS.flush()
    lines: list[dict[str, Any]] = []
    monkeypatch.setattr(ACCESS, "sink", lines.extend)
    monkeypatch.setattr(ACCESS, "enabled", lambda: True)
    return lines


async def test_request_id_is_taken_or_made_and_echoed(
    client: httpx.AsyncClient, access_lines: list[dict[str, Any]]
) -> None:
    given = await client.post(
        "/v1/models/default/forward",
        json={"input": [[0.0] * 10]},
        headers={"X-Request-ID": "trace-42"},
    )
    made = await client.get("/healthz")
    again = await client.get("/healthz")
    odd = await client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert given.headers["x-request-id"] == "trace-42"
    made_id = made.headers["x-request-id"]
    assert len(made_id) == 32
    assert again.headers["x-request-id"] not in (made_id, "")
    assert odd.headers["x-request-id"] != "bad id with spaces"
    ACCESS.flush()
    entry = next(line for line in access_lines if line["request_id"] == "trace-42")
    assert entry["logger"] == "rnn_serve.access"
    assert entry["msg"] == "request"
    assert entry["method"] == "POST"
    assert entry["path"] == "/v1/models/default/forward"
    assert entry["status"] == 200
    assert entry["model"] == "default"
    assert entry["sequences"] == 1
    assert entry["batch"] >= 1
    assert entry["duration_ms"] > 0
    assert entry["level"] == "info"


async def test_metrics_cover_stages_registry_and_memory(client: httpx.AsyncClient) -> None:
    await client.post("/v1/models/default/forward", json={"input": [[0.0] * 10]})
    text = (await client.get("/metrics")).text
    for needle in (
        'rnn_serve_stage_seconds_count{model="default",stage="decode"}',
        'rnn_serve_stage_seconds_count{model="default",stage="queue"}',
        'rnn_serve_stage_seconds_count{model="default",stage="compute"}',
        'rnn_serve_stage_seconds_count{model="default",stage="encode"}',
        "rnn_serve_batch_sequences_bucket",
        "rnn_serve_timesteps_total",
        'rnn_serve_registry_events_total{event="build"}',
        "rnn_serve_loaded_modules",
        "rnn_serve_open_sessions",
        'rnn_serve_requests_total{method="POST",protocol="http",route="/v1/models/{name}/forward",status="200"}',
        'rnn_serve_request_duration_seconds_count{protocol="http",route="/v1/models/{name}/forward"}',
        'rnn_serve_model_inferences_total{model="default",outcome="success"}',
        'rnn_serve_model_executions_total{model="default"}',
        'rnn_serve_model_last_inference_timestamp_seconds{model="default"}',
        "rnn_serve_requests_in_flight 1.0",  # the /metrics request itself
        "rnn_serve_queue_depth 0.0",
        "process_resident_memory_bytes",
        "python_gc_collections_total",
    ):
        assert needle in text, needle
    # inline configs share one label value: their keys are unbounded, a label's values must not be
    config = {"input_size": 2, "hidden_size": 3}
    await client.post("/v1/rnn/forward", json={"config": config, "input": [[0.0, 1.0]]})
    text = (await client.get("/metrics")).text
    assert 'rnn_serve_model_inferences_total{model="inline",outcome="success"}' in text
    assert "canonical" not in text
    memory = next(ln for ln in text.splitlines() if ln.startswith("rnn_serve_device_memory_bytes "))
    assert float(memory.split()[1]) > 0  # the default model's parameters, on the CPU


async def post_then_leave(app: Any, path: str) -> list[dict[str, Any]]:
    """Raw ASGI: half a body, then the client disconnects. Returns what the app sent."""
    messages: Iterator[dict[str, Any]] = iter([
        {"type": "http.request", "body": b'{"input": [[0.0', "more_body": True},
        {"type": "http.disconnect"},
    ])  # fmt: skip
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1), "server": ("testserver", 80),
    }  # fmt: skip
    await app(scope, receive, send)
    return sent


async def test_a_client_that_leaves_mid_body_is_counted_499_not_500(
    client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    access_lines: list[dict[str, Any]],
) -> None:
    """The request is the client's 499, logged as such, with no error logged."""
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    routes = {
        "/v1/models/default/forward": "/v1/models/{name}/forward",
        "/v2/models/default/infer": "/v2/models/{name}/infer",
        "/v1/models": "/v1/models",
    }
    with caplog.at_level(logging.INFO):
        for path in routes:
            sent = await post_then_leave(transport.app, path)
            assert sent[0]["status"] == 499, (path, sent)
    text = (await client.get("/metrics")).text
    for route in routes.values():
        assert f'route="{route}",status="499"' in text, route
    assert 'status="500"' not in text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    ACCESS.flush()
    assert len([line for line in access_lines if line["status"] == 499]) == 3


async def test_a_deleted_models_series_go(fresh_client: httpx.AsyncClient) -> None:
    """Label values must not grow with every model name ever registered."""
    c = fresh_client
    config = {"input_size": 2, "hidden_size": 3}
    assert (await c.post("/v1/models", json={"name": "brief", "config": config})).is_success
    await c.post("/v1/models/brief/forward", json={"input": [[0.0, 1.0]]})
    assert 'model="brief"' in (await c.get("/metrics")).text
    assert (await c.delete("/v1/models/brief")).status_code == 204
    assert 'model="brief"' not in (await c.get("/metrics")).text
