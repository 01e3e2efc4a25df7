"""Property tests (hypothesis) for what a hostile client sends: shapes, sequence ids, booleans and
headers are generated, not hand-picked, with API keys on and off. Whatever comes, the answer is a
4xx in the protocol's form or a 2xx — never a 5xx — and the server stays exact afterwards."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import make_settings, open_client

pytestmark = pytest.mark.anyio

ADMIN = "admin-key-0123456789"
KEY = "infer-key-0123456789"
EXAMPLES = settings(
    max_examples=60, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip

Server = tuple[httpx.AsyncClient, dict[str, str]]


@pytest.fixture(scope="module", params=["open", "keys"])
async def server(request: pytest.FixtureRequest, anyio_backend: str) -> AsyncIterator[Server]:
    if request.param == "open":
        settings_, headers = make_settings(max_session_state_bytes=1 << 20), {}
    else:
        settings_ = make_settings(
            admin_keys=[ADMIN], inference_keys=[KEY], max_session_state_bytes=1 << 20
        )
        headers = {"Authorization": f"Bearer {ADMIN}"}
    async for c in open_client(settings_):
        yield c, headers


# JSON of every kind, ints past 64 bits included
scalars = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
)  # fmt: skip
json_values = st.recursive(
    scalars,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=3)
    ),
    max_leaves=8,
)
dims = (
    st.integers(-2, 12)
    | st.sampled_from([0, 2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1, 2**64])
    | st.booleans()
)  # fmt: skip
shapes = st.lists(dims, max_size=70) | json_values


def assert_refused_or_served(r: httpx.Response, oip: bool) -> None:
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        if oip:
            assert isinstance(r.json()["error"], str)
        else:
            assert r.headers["content-type"] == "application/problem+json", r.text
            assert r.json()["status"] == r.status_code
    assert "Traceback" not in r.text


async def assert_still_exact(c: httpx.AsyncClient, h: dict[str, str]) -> None:
    x = np.linspace(-1, 1, 30, dtype=np.float32).reshape(3, 1, 10)
    first = await c.post("/v1/models/default/forward", json={"input": x.tolist()}, headers=h)
    again = await c.post("/v1/models/default/forward", json={"input": x.tolist()}, headers=h)
    assert first.status_code == again.status_code == 200
    assert first.json()["output"] == again.json()["output"]


@given(shape=shapes, field=st.sampled_from(["input", "h0", "c0"]), form=st.sampled_from(
    ["data", "b64"]), mode=st.sampled_from(["RNN", "LSTM"]))  # fmt: skip
@EXAMPLES
async def test_v1_shapes(server: Server, shape: Any, field: str, form: str, mode: str) -> None:
    c, h = server
    tensor = {"shape": shape, "dtype": "float32", form: [] if form == "data" else ""}
    body: dict[str, Any] = {"input": [[0.0] * 10], field: tensor}
    if field == "c0":
        body["h0"] = tensor
    config = {"mode": mode, "input_size": 10, "hidden_size": 4}
    r = await c.post("/v1/rnn/forward", json={"config": config, **body}, headers=h)
    assert_refused_or_served(r, oip=False)
    if field != "c0":
        r = await c.post("/v1/models/default/forward", json=body, headers=h)
        assert_refused_or_served(r, oip=False)


@given(shape=shapes, binary=st.booleans())
@EXAMPLES
async def test_oip_shapes(server: Server, shape: Any, binary: bool) -> None:
    c, h = server
    item: dict[str, Any] = {"name": "input", "shape": shape, "datatype": "FP32"}
    if binary:
        item["parameters"] = {"binary_data_size": 0}
        head = json.dumps({"inputs": [item]}).encode()
        r = await c.post("/v2/models/default/infer", content=head, headers={
            **h, "Inference-Header-Content-Length": str(len(head))})  # fmt: skip
    else:
        item["data"] = []
        r = await c.post("/v2/models/default/infer", json={"inputs": [item]}, headers=h)
    assert_refused_or_served(r, oip=True)


sequence_ids = st.integers(-(2**65), 2**65) | st.text(max_size=300) | json_values


@given(
    params=st.fixed_dictionaries({}, optional={
        "sequence_id": sequence_ids, "sequence_start": json_values, "sequence_end": json_values,
        "start_step": json_values,
    }),
    steps=st.integers(1, 3),
)  # fmt: skip
@EXAMPLES
async def test_oip_sequence_parameters(server: Server, params: dict[str, Any], steps: int) -> None:
    c, h = server
    data = [0.25] * (steps * 10)
    body = {
        "parameters": params,
        "inputs": [{"name": "input", "shape": [steps, 10], "datatype": "FP32", "data": data}],
    }
    r = await c.post("/v2/models/default/infer", json=body, headers=h)
    assert_refused_or_served(r, oip=True)


header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)


@given(
    encodings=st.lists(st.sampled_from(["gzip", "deflate", "br", "identity", "", "gzip, gzip"])
                       | header_text, max_size=2),
    auths=st.lists(st.sampled_from([f"Bearer {ADMIN}", f"Bearer {KEY}", "Bearer nope", "Basic x"])
                   | header_text, max_size=3),
    session_id=header_text,
    batch_size=json_values,
    start_step=json_values,
)  # fmt: skip
@EXAMPLES
async def test_headers_and_session_fields(
    server: Server,
    encodings: list[str],
    auths: list[str],
    session_id: str,
    batch_size: Any,
    start_step: Any,
) -> None:
    c, _ = server
    headers = [("content-type", "application/json"), ("x-session-id", session_id)]
    headers += [("content-encoding", e) for e in encodings]
    headers += [("authorization", a) for a in auths]
    body = json.dumps({"batch_size": batch_size}).encode()
    r = await c.post("/v1/models/default/sessions", content=body, headers=headers)
    assert_refused_or_served(r, oip=False)
    if r.status_code == 201:
        sid = r.json()["session_id"]
        x = base64.b64encode(np.zeros((1, 1, 10), "<f4").tobytes()).decode()
        chunk = {"input": {"shape": [1, 1, 10], "dtype": "float32", "b64": x},
                 "start_step": start_step}  # fmt: skip
        keyed = [(k, v) for k, v in headers if k != "content-encoding"]
        r = await c.post(f"/v1/sessions/{sid}/forward", content=json.dumps(chunk).encode(),
                         headers=keyed)  # fmt: skip
        assert_refused_or_served(r, oip=False)


async def test_exact_after_the_fuzzing(server: Server) -> None:
    """Runs after the properties above (same module, same server)."""
    await assert_still_exact(*server)
