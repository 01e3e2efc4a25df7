"""Open Inference Protocol v2 in-process: metadata, JSON and binary inference, errors."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from tests.oracle import lstm_forward, rnn_forward, seeded_params
from tests.support.helpers import b64, decode

pytestmark = pytest.mark.anyio
SEED = {"input_size": 10, "hidden_size": 20, "num_layers": 2}


def binary_request(
    tensors: list[tuple[str, str, np.ndarray]], binary_output: bool = True
) -> tuple[bytes, dict[str, str]]:
    inputs, chunks = [], []
    for name, datatype, arr in tensors:
        raw = arr.tobytes()
        inputs.append(
            {
                "name": name,
                "shape": list(arr.shape),
                "datatype": datatype,
                "parameters": {"binary_data_size": len(raw)},
            }
        )
        chunks.append(raw)
    head = orjson.dumps(
        {"id": "r1", "inputs": inputs, "parameters": {"binary_data_output": binary_output}}
    )
    return head + b"".join(chunks), {
        "Inference-Header-Content-Length": str(len(head)),
        "content-type": "application/octet-stream",
    }


def read_binary(r: httpx.Response) -> dict[str, Any]:
    n = int(r.headers["inference-header-content-length"])
    head = orjson.loads(r.content[:n])
    out, offset = {}, n
    for o in head["outputs"]:
        size = o["parameters"]["binary_data_size"]
        out[o["name"]] = np.frombuffer(r.content[offset : offset + size], "<f4").reshape(o["shape"])
        offset += size
    return {"head": head, **out}


async def test_server_and_model_metadata(client: httpx.AsyncClient) -> None:
    extensions = ["binary_tensor_data", "sequence", "model_repository", "statistics"]
    assert (await client.get("/v2")).json()["extensions"] == extensions
    assert (await client.get("/v2/health/live")).json() == {"live": True}
    assert (await client.get("/v2/health/ready")).json() == {"ready": True}
    meta = (await client.get("/v2/models/default")).json()
    assert meta["inputs"] == [
        {"name": "input", "datatype": "FP32", "shape": [-1, -1, 10]},
        {"name": "h0", "datatype": "FP32", "shape": [2, -1, 20]},
        {"name": "lengths", "datatype": "INT64", "shape": [-1]},
    ]
    assert meta["outputs"] == [
        {"name": "output", "datatype": "FP32", "shape": [-1, -1, 20]},
        {"name": "h_n", "datatype": "FP32", "shape": [2, -1, 20]},
    ]
    assert (await client.get("/v2/models/default/ready")).json() == {
        "name": "default",
        "ready": True,
    }
    missing = await client.get("/v2/models/nope")
    assert missing.status_code == 404
    assert "nope" in missing.json()["error"]


async def test_json_infer_equals_v1_and_oracle(client: httpx.AsyncClient) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3, 10)).astype(np.float32)
    h0 = rng.standard_normal((2, 3, 20)).astype(np.float32)
    body = {"inputs": [
        {"name": "input", "shape": [5, 3, 10], "datatype": "FP32", "data": x.ravel().tolist()},
        {"name": "h0", "shape": [2, 3, 20], "datatype": "FP32", "data": h0.tolist()},  # nested works too
        {"name": "lengths", "shape": [3], "datatype": "INT64", "data": [5, 2, 4]},
    ]}  # fmt: skip
    r = await client.post("/v2/models/default/infer", json=body)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    outs = {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in r.json()["outputs"]}
    v1 = (
        await client.post(
            "/v1/models/default/forward",
            json={"input": b64(x), "h0": b64(h0), "lengths": [5, 2, 4], "output_encoding": "b64"},
        )
    ).json()
    np.testing.assert_allclose(outs["output"], decode(v1["output"]), atol=1e-6)
    np.testing.assert_allclose(outs["h_n"], decode(v1["h_n"]), atol=1e-6)
    want_out, want_hn = rnn_forward(seeded_params(SEED), SEED, x, h0, [5, 2, 4])
    np.testing.assert_allclose(outs["output"], want_out, atol=1e-5)
    np.testing.assert_allclose(outs["h_n"], want_hn, atol=1e-5)


async def test_binary_infer(client: httpx.AsyncClient) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 2, 10)).astype(np.float32)
    h0 = rng.standard_normal((2, 2, 20)).astype(np.float32)
    content, headers = binary_request(
        [
            ("input", "FP32", x),
            ("h0", "FP32", h0),
            ("lengths", "INT64", np.array([4, 1], dtype="<i8")),
        ]
    )
    r = await client.post("/v2/models/default/infer", content=content, headers=headers)
    assert r.status_code == 200, r.text
    got = read_binary(r)
    assert got["head"]["id"] == "r1"
    want_out, want_hn = rnn_forward(seeded_params(SEED), SEED, x, h0, [4, 1])
    np.testing.assert_allclose(got["output"], want_out, atol=1e-5)
    np.testing.assert_allclose(got["h_n"], want_hn, atol=1e-5)


async def test_requested_outputs_mix_binary_and_json(client: httpx.AsyncClient) -> None:
    x = np.ones((2, 10), dtype=np.float32)  # unbatched
    content, headers = binary_request([("input", "FP32", x)], binary_output=False)
    head_len = int(headers["Inference-Header-Content-Length"])
    head = orjson.loads(content[:head_len])
    head["outputs"] = [{"name": "h_n", "parameters": {"binary_data": True}}]
    new_head = orjson.dumps(head)
    r = await client.post("/v2/models/default/infer", content=new_head + content[head_len:],
                          headers={**headers, "Inference-Header-Content-Length": str(len(new_head))})  # fmt: skip
    assert r.status_code == 200, r.text
    got = read_binary(r)
    assert [o["name"] for o in got["head"]["outputs"]] == ["h_n"]
    assert got["h_n"].shape == (2, 20)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"inputs": [{"name": "input", "shape": [5, 3, 11], "datatype": "FP32", "data": [0.0] * 165}]}, "Expected 10, got 11"),
        ({"inputs": [{"name": "input", "shape": [5, 3, 10], "datatype": "FP64", "data": [0.0] * 150}]}, "does not match weight dtype"),
        ({"inputs": [{"name": "input", "shape": [5, 3, 10], "datatype": "FP32", "data": [0.0] * 149}]}, "needs 150 values, got 149"),
        ({"inputs": [{"name": "x", "shape": [1, 10], "datatype": "FP32", "data": [0.0] * 10}]}, "unexpected input 'x'"),
        ({"inputs": [{"name": "input", "shape": [1, 10], "datatype": "INT8", "data": [0] * 10}]}, "datatype must be one of"),
        ({"inputs": [{"name": "input", "shape": [1, 1, 10], "datatype": "FP32", "data": [0.0] * 10},
                     {"name": "lengths", "shape": [1], "datatype": "INT64", "data": [2]}]}, "each length must be in [1, 1], got 2"),
        ({"inputs": []}, "'input' is required"),
        ({"inputs": [{"name": "input", "shape": [1, 10], "datatype": "FP32", "parameters": {"binary_data_size": 40}}]}, "runs past the binary data"),
        ({"inputs": [{"name": "input", "shape": [1, 10], "datatype": "FP32", "data": [0.0] * 10}], "outputs": [{"name": "c_n"}]}, "unknown outputs"),
    ],
)  # fmt: skip
async def test_errors_are_400_with_the_protocol_body(
    client: httpx.AsyncClient, body: dict[str, Any], fragment: str
) -> None:
    r = await client.post("/v2/models/default/infer", json=body)
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"error"}
    assert fragment in r.json()["error"]


async def test_malformed_header_length(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v2/models/default/infer", content=b"{}", headers={"Inference-Header-Content-Length": "99"}
    )
    assert r.status_code == 400
    assert "out of range" in r.json()["error"]


LSTM = {"mode": "LSTM", "input_size": 3, "hidden_size": 5, "num_layers": 2, "proj_size": 2}


async def test_lstm_metadata_and_binary_infer_with_c0(fresh_client: httpx.AsyncClient) -> None:
    c = fresh_client
    assert (await c.post("/v1/models", json={"name": "l", "config": LSTM})).status_code == 201
    meta = (await c.get("/v2/models/l")).json()
    assert meta["platform"] == "pytorch_lstm"
    assert [(t["name"], t["shape"]) for t in meta["inputs"]] == [
        ("input", [-1, -1, 3]), ("h0", [2, -1, 2]), ("c0", [2, -1, 5]), ("lengths", [-1]),
    ]  # fmt: skip
    assert [(t["name"], t["shape"]) for t in meta["outputs"]] == [
        ("output", [-1, -1, 2]), ("h_n", [2, -1, 2]), ("c_n", [2, -1, 5]),
    ]  # fmt: skip
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 3, 3)).astype(np.float32)
    h0 = rng.standard_normal((2, 3, 2)).astype(np.float32)
    c0 = rng.standard_normal((2, 3, 5)).astype(np.float32)
    lengths = np.array([4, 1, 3], dtype="<i8")
    content, headers = binary_request(
        [
            ("input", "FP32", x),
            ("h0", "FP32", h0),
            ("c0", "FP32", c0),
            ("lengths", "INT64", lengths),
        ]
    )
    r = await c.post("/v2/models/l/infer", content=content, headers=headers)
    assert r.status_code == 200, r.text
    got = read_binary(r)
    assert [o["name"] for o in got["head"]["outputs"]] == ["output", "h_n", "c_n"]
    want_out, want_hn, want_cn = lstm_forward(seeded_params(LSTM), LSTM, x, h0, c0, list(lengths))
    np.testing.assert_allclose(got["output"], want_out, atol=1e-5)
    np.testing.assert_allclose(got["h_n"], want_hn, atol=1e-5)
    np.testing.assert_allclose(got["c_n"], want_cn, atol=1e-5)
    # JSON, asking for c_n alone
    body = {
        "inputs": [{"name": "input", "shape": [4, 3, 3], "datatype": "FP32",
                    "data": x.ravel().tolist()}],
        "outputs": [{"name": "c_n"}],
    }  # fmt: skip
    r = await c.post("/v2/models/l/infer", json=body)
    assert r.status_code == 200, r.text
    (only,) = r.json()["outputs"]
    assert only["name"] == "c_n"
    _, _, zero_state_cn = lstm_forward(seeded_params(LSTM), LSTM, x)
    np.testing.assert_allclose(np.reshape(only["data"], only["shape"]), zero_state_cn, atol=1e-5)


async def test_c0_and_c_n_belong_to_lstm(client: httpx.AsyncClient) -> None:
    x = np.zeros((2, 1, 10), dtype=np.float32)
    content, headers = binary_request(
        [("input", "FP32", x), ("h0", "FP32", np.zeros((2, 1, 20), np.float32)),
         ("c0", "FP32", np.zeros((2, 1, 20), np.float32))]
    )  # fmt: skip
    r = await client.post("/v2/models/default/infer", content=content, headers=headers)
    assert r.status_code == 400
    assert "unexpected input 'c0'" in r.json()["error"]
    r = await client.post(
        "/v2/models/default/infer",
        json={"inputs": [{"name": "input", "shape": [1, 10], "datatype": "FP32",
                          "data": [0.0] * 10}], "outputs": [{"name": "c_n"}]},
    )  # fmt: skip
    assert r.status_code == 400
    assert "unknown outputs ['c_n']" in r.json()["error"]


async def test_lstm_sequence_holds_h_and_c(fresh_client: httpx.AsyncClient) -> None:
    """The OIP sequence extension on an LSTM: the server keeps (h, c) between requests."""
    c = fresh_client
    await c.post("/v1/models", json={"name": "l", "config": LSTM})
    rng = np.random.default_rng(8)
    x = rng.standard_normal((9, 3)).astype(np.float32)
    h0, c0 = (
        rng.standard_normal((2, 2)).astype(np.float32),
        rng.standard_normal((2, 5)).astype(np.float32),
    )
    outs = []
    for i, (a, b) in enumerate([(0, 4), (4, 5), (5, 9)]):
        tensors = [("input", "FP32", np.ascontiguousarray(x[a:b]))]
        if i == 0:
            tensors += [("h0", "FP32", h0), ("c0", "FP32", c0)]
        content, headers = binary_request(tensors)
        head_len = int(headers["Inference-Header-Content-Length"])
        head = orjson.loads(content[:head_len])
        head["parameters"].update({"sequence_id": "s-1", "sequence_start": i == 0,
                                   "sequence_end": i == 2})  # fmt: skip
        new_head = orjson.dumps(head)
        headers["Inference-Header-Content-Length"] = str(len(new_head))
        r = await c.post(
            "/v2/models/l/infer", content=new_head + content[head_len:], headers=headers
        )
        assert r.status_code == 200, r.text
        got = read_binary(r)
        outs.append(got["output"])
    want_out, want_hn, want_cn = lstm_forward(seeded_params(LSTM), LSTM, x, h0, c0)
    np.testing.assert_allclose(np.concatenate(outs), want_out, atol=1e-5)
    np.testing.assert_allclose(got["h_n"], want_hn, atol=1e-5)
    np.testing.assert_allclose(got["c_n"], want_cn, atol=1e-5)
