"""Optional OpenTelemetry tracing, with the SDK's in-memory exporter: one span per request, and
a forward's decode, queue, compute and encode as its children, in order and inside it. Off by
default: no span at all."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.conftest import make_settings, open_client

pytestmark = pytest.mark.anyio
EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def provider() -> None:
    # the process's one tracer provider (OpenTelemetry sets it once): spans go to memory
    sdk = TracerProvider()
    sdk.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(sdk)


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def times(span: ReadableSpan) -> tuple[int, int]:
    assert span.start_time is not None
    assert span.end_time is not None
    return span.start_time, span.end_time


async def _forward_and_session(c: httpx.AsyncClient) -> None:
    r = await c.post("/v1/models/default/forward", json={"input": [[0.0] * 10]})
    assert r.status_code == 200
    sid = (await c.post("/v1/models/default/sessions", json={})).json()["session_id"]
    assert (await c.post(f"/v1/sessions/{sid}/forward", json={"input": [[0.0] * 10]})).is_success


async def test_spans_for_requests_and_forward_stages(anyio_backend: str) -> None:
    async for c in open_client(make_settings(tracing=True)):
        EXPORTER.clear()
        await _forward_and_session(c)
        r = await c.post("/v1/models/default/forward", json={"input": "nope"})
        assert r.status_code == 422
    spans = EXPORTER.get_finished_spans()
    requests = [s for s in spans if s.kind == trace.SpanKind.SERVER]
    routes = [s.name for s in requests]
    assert routes == [
        "POST /v1/models/{name}/forward",
        "POST /v1/models/{name}/sessions",
        "POST /v1/sessions/{session_id}/forward",
        "POST /v1/models/{name}/forward",
    ]
    assert [attrs(s)["http.response.status_code"] for s in requests] == [200, 201, 200, 422]
    forward = requests[0]
    children = [s for s in spans if s.parent is not None
                and s.parent.span_id == forward.context.span_id]  # fmt: skip
    assert [s.name for s in children] == ["decode", "queue", "compute", "encode"]
    start, end = times(forward)
    for child in children:
        assert child.context.trace_id == forward.context.trace_id
        assert start <= times(child)[0] <= times(child)[1] <= end
        assert attrs(child)["rnn_serve.model"] == "default"
    starts = [times(c)[0] for c in children]
    assert starts == sorted(starts)
    assert times(children[2])[1] > times(children[2])[0]  # compute: the engine's measured time
    chunk = [s for s in spans if s.parent is not None
             and s.parent.span_id == requests[2].context.span_id]  # fmt: skip
    assert {attrs(s).get("rnn_serve.session") for s in chunk} != {None}


async def test_a_callers_trace_continues(anyio_backend: str) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent = "00f067aa0ba902b7"
    async for c in open_client(make_settings(tracing=True)):
        EXPORTER.clear()
        r = await c.get("/healthz", headers={"traceparent": f"00-{trace_id}-{parent}-01"})
        assert r.status_code == 200
    (span,) = EXPORTER.get_finished_spans()
    assert f"{span.context.trace_id:032x}" == trace_id
    assert span.parent is not None
    assert f"{span.parent.span_id:016x}" == parent


async def test_off_by_default(anyio_backend: str) -> None:
    async for c in open_client(make_settings()):
        EXPORTER.clear()
        await _forward_and_session(c)
    assert EXPORTER.get_finished_spans() == ()


async def test_grpc_calls_and_stream_requests_have_spans(anyio_backend: str) -> None:
    """Over gRPC too: one server span per call and per stream request (rpc.* attributes, the
    caller's traceparent from metadata), the forward's stages as its children."""
    import grpc
    import numpy as np

    from service.codecs import messages as m
    from tests.support.server import free_port

    def request(**flags: object) -> bytes:
        req = m.ModelInferRequest(model_name="default", id="t1")
        req.inputs.add(name="input", datatype="FP32", shape=[2, 1, 10])
        req.raw_input_contents.append(np.zeros((2, 1, 10), np.float32).tobytes())
        for name, value in flags.items():
            if isinstance(value, bool):
                req.parameters[name].bool_param = value
            else:
                req.parameters[name].int64_param = int(value)  # type: ignore[call-overload]
        return bytes(req.SerializeToString())

    port = free_port()
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    async for _ in open_client(make_settings(tracing=True, grpc_port=port)):
        EXPORTER.clear()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            infer: Any = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
            await infer(request(), metadata=(("traceparent", f"00-{trace_id}-{parent}-01"),))
            stream: Any = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
            call = stream()
            await call.write(request(sequence_id=3, sequence_start=True))
            assert (await call.read())[:1] == b"\x12"  # an answer, not an error
            await call.done_writing()
    spans = EXPORTER.get_finished_spans()
    calls = [s for s in spans if s.kind == trace.SpanKind.SERVER]
    assert [s.name for s in calls] == [
        "inference.GRPCInferenceService/ModelInfer",
        "inference.GRPCInferenceService/ModelStreamInfer",
    ]
    assert attrs(calls[0])["rpc.system"] == "grpc"
    assert attrs(calls[0])["rpc.grpc.status_code"] == 0
    assert f"{calls[0].context.trace_id:032x}" == trace_id
    for call_span in calls:
        children = [s.name for s in spans if s.parent is not None
                    and s.parent.span_id == call_span.context.span_id]  # fmt: skip
        assert children == ["decode", "queue", "compute", "encode"]


# Starlette's TestClient (the in-process WebSocket client) warns that it wants httpx2 one day
@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_a_websocket_streams_chunks_are_spans_with_their_forwards() -> None:
    """A span per chunk of a WebSocket stream (the upgrade's traceparent its parent), the
    forward's stages under it, its status the chunk's (200, or an error message's)."""
    import json

    from starlette.testclient import TestClient

    from service.app import create_app
    from tests.support import wait_until

    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    EXPORTER.clear()
    app = create_app(make_settings(tracing=True))
    headers = {"traceparent": parent}
    with TestClient(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, 30)
        with client.websocket_connect("/v1/models/default/stream", headers=headers) as ws:
            json.loads(ws.receive_text())
            ws.send_text(json.dumps({"input": [[0.0] * 10]}))
            assert "output" in json.loads(ws.receive_text())
            ws.send_text(json.dumps({"input": [[0.0] * 3]}))
            assert json.loads(ws.receive_text())["error"]["status"] == 422
    chunks = [s for s in EXPORTER.get_finished_spans() if s.name.startswith("WS ")]
    assert [attrs(s)["http.response.status_code"] for s in chunks] == [200, 422]
    for span in chunks:
        assert span.name == "WS /v1/models/default/stream"
        assert attrs(span)["rnn_serve.protocol"] == "websocket"
        assert span.parent is not None
        assert format(span.parent.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    first = chunks[0]
    stages = [s for s in EXPORTER.get_finished_spans()
              if s.parent is not None and s.parent.span_id == first.context.span_id]  # fmt: skip
    assert stages, "the forward's stage spans are the chunk's children"
