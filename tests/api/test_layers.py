"""Models with an embedding in front of the core and a head behind it: the server equals the
module a user trained (an ordinary nn.Module with its own forward, in eval mode) and the float64
oracle, for every mode, direction, projection, layout, dtype, packed lengths and `last_step`;
token ids are checked as torch checks them; `outputs` picks the tensors answered."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import make_settings, open_client
from tests.oracle import full_config, model_forward, seeded_model_params
from tests.support.helpers import TOLERANCE, b64, decode
from tests.support.models import seeded_net
from tests.support.strategies import layered_configs

pytestmark = pytest.mark.anyio


def make_input(config: dict[str, Any], rng: np.random.Generator, shape: str) -> tuple[Any, ...]:
    """(x as float64 or ids, lengths) for `shape`: unbatched, batched, or batched with lengths."""
    c = full_config(config)
    seq_len, batch = int(rng.integers(1, 6)), int(rng.integers(1, 4))
    dims: tuple[int, ...] = (seq_len,) if shape == "unbatched" else (
        (batch, seq_len) if c["batch_first"] else (seq_len, batch)
    )  # fmt: skip
    lengths = None
    if shape == "lengths":
        lengths = [int(n) for n in rng.integers(1, seq_len + 1, batch)]
        lengths[0] = seq_len
    if c.get("embedding") is not None:
        return rng.integers(0, c["embedding"]["num_embeddings"], dims), lengths
    x = rng.standard_normal((*dims, c["input_size"]))
    return torch.from_numpy(x).to(getattr(torch, c["dtype"])).double().numpy(), lengths


def wire(x: np.ndarray, config: dict[str, Any]) -> Any:
    if full_config(config).get("embedding") is not None:
        return x.tolist()
    return b64(x, full_config(config)["dtype"])


def head_of(want: tuple[Any, ...]) -> np.ndarray:
    """The oracle's head output (a model with a head has one)."""
    assert want[3] is not None
    out: np.ndarray = want[3]
    return out


def head_name(config: dict[str, Any]) -> str:
    activation = config["head"].get("activation", "none")
    return "logits" if activation == "none" else str(activation)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(config=layered_configs(), shape=st.sampled_from(["unbatched", "batched", "lengths"]),
       seed=st.integers(0, 2**31))  # fmt: skip
async def test_layers_equal_the_module_and_the_oracle(
    client: httpx.AsyncClient, config: dict[str, Any], shape: str, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    x, lengths = make_input(config, rng, shape)
    body: dict[str, Any] = {"config": config, "input": wire(x, config), "output_encoding": "b64"}
    if lengths is not None:
        body["lengths"] = lengths
    r = await client.post("/v1/rnn/forward", json=body)
    assert r.status_code == 200, r.text
    got = r.json()
    dtype = full_config(config)["dtype"]
    tol = TOLERANCE[dtype] * (10 if dtype in ("float32", "float64") else 1)
    want = model_forward(seeded_model_params(config), config, x, lengths=lengths)
    np.testing.assert_allclose(decode(got["output"]), want[0], atol=tol)
    np.testing.assert_allclose(decode(got["h_n"]), want[1], atol=tol)
    if want[2] is not None:
        np.testing.assert_allclose(decode(got["c_n"]), want[2], atol=tol)
    if "head" in config:
        name = head_name(config)
        assert got[f"{name}_shape"] == list(head_of(want).shape)
        np.testing.assert_allclose(decode(got[name]), head_of(want), atol=tol)
    if dtype not in ("float32", "float64"):
        return  # the module in half precision on the CPU is not the reference: the oracle is
    net = seeded_net(config).to(getattr(torch, dtype))
    tx = torch.from_numpy(x if "embedding" in config else x.astype(np.float64)).to(
        torch.int64 if "embedding" in config else getattr(torch, dtype)
    )
    with torch.no_grad():
        out, _, y = net(tx, None, lengths)
    np.testing.assert_allclose(decode(got["output"]), out.double().numpy(), atol=tol)
    if y is not None:
        want_y = y.double().numpy()
        if lengths is not None and config["head"]["on"] == "every_step":
            for i, n in enumerate(lengths):  # past a sequence's length: no step, 0 (the contract)
                want_y[
                    (i, slice(n, None))
                    if full_config(config)["batch_first"]
                    else (slice(n, None), i)
                ] = 0
        np.testing.assert_allclose(decode(got[head_name(config)]), want_y, atol=tol)


CLASSIFIER = {
    "mode": "LSTM", "input_size": 4, "hidden_size": 6, "batch_first": True,
    "embedding": {"num_embeddings": 10, "padding_idx": 0},
    "head": {"out_features": 3, "activation": "softmax", "on": "last_step"},
}  # fmt: skip


async def test_a_classifier_reads_each_sequences_own_last_step(client: httpx.AsyncClient) -> None:
    """Packed lengths with `last_step`: each sequence's head output is at its own last step
    (what a classifier needs), and `outputs` ships the probabilities alone."""
    ids = np.array([[1, 2, 3, 4, 5], [6, 7, 0, 0, 0], [9, 0, 0, 0, 0]])
    lengths = [5, 2, 1]
    body = {"config": CLASSIFIER, "input": ids.tolist(), "lengths": lengths,
            "outputs": ["softmax"]}  # fmt: skip
    r = await client.post("/v1/rnn/forward", json=body)
    assert r.status_code == 200, r.text
    got = r.json()
    assert set(got) == {"model", "softmax", "softmax_shape", "dtype", "device"}
    assert got["softmax_shape"] == [3, 3]
    for i, n in enumerate(lengths):  # each alone, unpadded: the same row
        alone = {"config": CLASSIFIER, "input": ids[i : i + 1, :n].tolist(), "outputs": ["softmax"]}
        one = (await client.post("/v1/rnn/forward", json=alone)).json()
        np.testing.assert_allclose(got["softmax"][i], one["softmax"][0], atol=1e-6)
    np.testing.assert_allclose(np.asarray(got["softmax"]).sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize(
    ("ids", "loc", "needle"),
    [
        ([[1, 2], [3, 10]], ["body", "input", 1, 1], "index 10 is out of range for the "
         "embedding's 10 rows"),
        ([[1, -1]], ["body", "input", 0, 1], "index -1 is out of range"),
        ([[1.5, 2]], ["body", "input"], "expected integer token ids"),
        ([[[1.0, 2.0]]], ["body", "input"], "token ids for the embedding are (L, N)"),
        ({"shape": [2], "dtype": "float32", "data": [1, 2]}, ["body", "input", "dtype"],
         "expected one of int64, int32"),
    ],
)  # fmt: skip
async def test_bad_token_ids_are_422_naming_the_place(
    client: httpx.AsyncClient, ids: Any, loc: list[Any], needle: str
) -> None:
    r = await client.post("/v1/rnn/forward", json={"config": CLASSIFIER, "input": ids})
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["errors"][0]["loc"] == loc, problem
    assert needle in problem["errors"][0]["msg"], problem


def raw_b64(arr: np.ndarray) -> str:
    return base64.b64encode(arr.tobytes()).decode()


async def test_ids_come_in_every_wire_form(client: httpx.AsyncClient) -> None:
    ids = np.array([[1, 2, 3], [4, 5, 6]])
    forms = [ids.tolist(), {"shape": [2, 3], "dtype": "int64", "data": ids.ravel().tolist()},
             {"shape": [2, 3], "dtype": "int32", "b64": raw_b64(ids.astype("<i4"))},
             {"shape": [2, 3], "dtype": "int64", "b64": raw_b64(ids.astype("<i8"))}]  # fmt: skip
    answers = []
    for form in forms:
        r = await client.post("/v1/rnn/forward", json={"config": CLASSIFIER, "input": form})
        assert r.status_code == 200, r.text
        answers.append(r.json()["softmax"])
    for other in answers[1:]:
        assert other == answers[0]


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({**CLASSIFIER, "embedding": {"num_embeddings": 5, "max_norm": 1.0}}, "max_norm is refused"),
        ({**CLASSIFIER, "embedding": {"num_embeddings": 5, "padding_idx": 5}}, "Padding_idx must be"),
        ({**CLASSIFIER, "embedding": {"num_embeddings": 0}}, "num_embeddings"),
        ({**CLASSIFIER, "head": {"out_features": 2, "activation": "relu"}}, "activation"),
        ({**CLASSIFIER, "head": {"out_features": 2, "on": "first_step"}}, "on"),
        ({**CLASSIFIER, "head": {"out_features": True}}, "out_features should be of type int"),
    ],
)  # fmt: skip
async def test_bad_layer_configs_are_422(
    client: httpx.AsyncClient, config: dict[str, Any], needle: str
) -> None:
    r = await client.post("/v1/rnn/forward", json={"config": config, "input": [[1]]})
    assert r.status_code == 422, r.text
    assert needle in r.text


async def test_outputs_name_only_what_the_model_answers(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/rnn/forward", json={"config": CLASSIFIER, "input": [[1]], "outputs": ["logits"]}
    )
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["loc"] == ["body", "outputs", 0]
    assert "the model answers output, h_n, c_n, softmax" in r.text
    plain = {"input_size": 2, "hidden_size": 3}
    r = await client.post(
        "/v1/rnn/forward", json={"config": plain, "input": [[1.0, 2.0]], "outputs": ["h_n"]}
    )
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"model", "h_n", "h_n_shape", "dtype", "device"}


async def test_a_core_alone_reads_back_as_before(client: httpx.AsyncClient) -> None:
    """A config without layers stores, shows and hashes as it did: no `embedding: null`."""
    r = await client.get("/v1/models/default")
    assert r.status_code == 200
    assert "embedding" not in r.json()["config"]
    assert "head" not in r.json()["config"]


async def test_the_answer_limit_counts_the_head(fresh_client: httpx.AsyncClient) -> None:
    config = {"input_size": 1, "hidden_size": 1, "head": {"out_features": 1000}}
    x = np.zeros((64, 64, 1)).tolist()
    r = await fresh_client.post("/v1/rnn/forward", json={"config": config, "input": x})
    assert r.status_code == 200  # 64*64*(1 + 1000) elements: under the default limit
    from tests.conftest import make_settings, open_client

    async for small in open_client(make_settings(max_tensor_elements=64 * 64 * 100)):
        r = await small.post("/v1/rnn/forward", json={"config": config, "input": x})
        assert r.status_code == 413, r.text
        assert "output elements" in r.text


KWS = {
    "mode": "GRU", "input_size": 3, "hidden_size": 5,
    "head": {"out_features": 4, "activation": "log_softmax", "on": "every_step"},
}  # fmt: skip
CHAR = {
    "mode": "LSTM", "input_size": 4, "hidden_size": 6, "num_layers": 2,
    "embedding": {"num_embeddings": 12}, "head": {"out_features": 12},
}  # fmt: skip


@pytest.mark.parametrize("config", [CLASSIFIER, KWS, {**CHAR, "batch_first": True}])
async def test_concurrent_requests_share_a_forward_and_each_gets_its_own(
    fresh_client: httpx.AsyncClient, config: dict[str, Any]
) -> None:
    """Joined in the batcher (ragged lengths, unbatched and batched together), each answer is
    what the oracle gives that request alone."""
    r = await fresh_client.post("/v1/models", json={"name": "m", "config": config})
    assert r.status_code == 201, r.text
    rng = np.random.default_rng(5)
    cases = [make_input(config, rng, shape) for shape in ["unbatched", "batched", "lengths"] * 4]
    bodies = []
    for x, lengths in cases:
        body: dict[str, Any] = {"input": wire(x, config), "output_encoding": "b64"}
        if lengths is not None:
            body["lengths"] = lengths
        bodies.append(body)
    answers = await asyncio.gather(
        *(fresh_client.post("/v1/models/m/forward", json=b) for b in bodies)
    )
    params = seeded_model_params(config)
    name = head_name(config)
    for (x, lengths), answer in zip(cases, answers, strict=True):
        assert answer.status_code == 200, answer.text
        want = model_forward(params, config, x, lengths=lengths)
        np.testing.assert_allclose(decode(answer.json()["output"]), want[0], atol=1e-5)
        np.testing.assert_allclose(decode(answer.json()[name]), head_of(want), atol=1e-5)
    batches = (await fresh_client.get("/metrics")).text
    assert "rnn_serve_batch_sequences_count" in batches


@pytest.mark.parametrize("batch_first", [False, True])
async def test_token_ids_with_an_initial_state_joined_in_one_forward(
    fresh_client: httpx.AsyncClient, batch_first: bool
) -> None:
    """Token-id requests that carry h0 and c0, joined in the batcher: the state keeps the
    model's dtype (it was once laid out in the ids' int64, truncated or refused as a 500)."""
    config = {**CHAR, "batch_first": batch_first}
    r = await fresh_client.post("/v1/models", json={"name": "m", "config": config})
    assert r.status_code == 201, r.text
    rng = np.random.default_rng(9)
    cases = []
    for shape in ["batched", "batched", "lengths", "unbatched"] * 3:
        x, lengths = make_input(config, rng, shape)
        n = () if shape == "unbatched" else (x.shape[0 if batch_first else 1],)
        h0 = rng.standard_normal((2, *n, 6)).astype(np.float32)
        c0 = rng.standard_normal((2, *n, 6)).astype(np.float32)
        cases.append((x, lengths, h0, c0))
    bodies = []
    for x, lengths, h0, c0 in cases:
        body: dict[str, Any] = {"input": wire(x, config), "h0": b64(h0), "c0": b64(c0),
                                "output_encoding": "b64"}  # fmt: skip
        if lengths is not None:
            body["lengths"] = lengths
        bodies.append(body)
    answers = await asyncio.gather(
        *(fresh_client.post("/v1/models/m/forward", json=b) for b in bodies)
    )
    params = seeded_model_params(config)
    for (x, lengths, h0, c0), answer in zip(cases, answers, strict=True):
        assert answer.status_code == 200, answer.text
        want = model_forward(params, config, x, h0, c0, lengths=lengths)
        got = answer.json()
        np.testing.assert_allclose(decode(got["output"]), want[0], atol=1e-5)
        np.testing.assert_allclose(decode(got["h_n"]), want[1], atol=1e-5)
        assert want[2] is not None
        np.testing.assert_allclose(decode(got["c_n"]), want[2], atol=1e-5)
        np.testing.assert_allclose(decode(got[head_name(config)]), head_of(want), atol=1e-5)


@pytest.mark.parametrize("config", [CLASSIFIER, KWS, CHAR])
async def test_time_slices_give_the_whole_forward(
    anyio_backend: str, config: dict[str, Any]
) -> None:
    """A long forward run in slices (the state carried between them): every step's head output
    and each sequence's last step's, with ragged lengths ending in different slices."""
    rng = np.random.default_rng(9)
    async for c in open_client(make_settings(slice_macs=2000)):
        for shape in ("lengths", "unbatched", "batched"):
            x, lengths = make_input(
                {**config, "batch_first": config.get("batch_first", False)}, rng, shape
            )
            x = np.concatenate(
                [x] * 8,
                axis=1 if config.get("batch_first") and x.ndim > 1 and shape != "unbatched" else 0,
            )
            if lengths is not None:
                lengths = [n * 8 for n in lengths]
            body: dict[str, Any] = {
                "config": config,
                "input": wire(x, config),
                "output_encoding": "b64",
            }
            if lengths is not None:
                body["lengths"] = lengths
            r = await c.post("/v1/rnn/forward", json=body)
            assert r.status_code == 200, r.text
            want = model_forward(seeded_model_params(config), config, x, lengths=lengths)
            np.testing.assert_allclose(decode(r.json()["h_n"]), want[1], atol=1e-5)
            np.testing.assert_allclose(
                decode(r.json()[head_name(config)]), head_of(want), atol=1e-5
            )


async def stream_chunks(
    c: httpx.AsyncClient, model: str, chunks: list[np.ndarray], config: dict[str, Any]
) -> list[np.ndarray]:
    """Each chunk's head output, streamed through one session."""
    r = await c.post(f"/v1/models/{model}/sessions", json={})
    assert r.status_code == 201, r.text
    sid = r.json()["session_id"]
    heads = []
    for k, chunk in enumerate(chunks):
        body = {"input": wire(chunk, config), "output_encoding": "b64", "start_step": k * len(chunk),
                "outputs": [head_name(config)]}  # fmt: skip
        r = await c.post(f"/v1/sessions/{sid}/forward", json=body)
        assert r.status_code == 200, r.text
        heads.append(decode(r.json()[head_name(config)]))
    again = await c.post(f"/v1/sessions/{sid}/forward", json=body)  # a retry: the kept answer
    assert again.status_code == 200, again.text
    np.testing.assert_array_equal(decode(again.json()[head_name(config)]), heads[-1])
    return heads


async def test_a_char_lstm_streamed_over_100_chunks_equals_one_forward(
    fresh_client: httpx.AsyncClient,
) -> None:
    """The session holds the core's state; every chunk's logits come with its answer, and
    together they are the whole sequence's."""
    r = await fresh_client.post("/v1/models", json={"name": "char", "config": CHAR})
    assert r.status_code == 201, r.text
    ids = np.random.default_rng(3).integers(0, 12, (200,))
    heads = await stream_chunks(fresh_client, "char", list(ids.reshape(100, 2)), CHAR)
    want = model_forward(seeded_model_params(CHAR), CHAR, ids)
    np.testing.assert_allclose(np.concatenate(heads), head_of(want), atol=1e-5)


def trained_net(config: dict[str, Any], names: tuple[str, str, str], seed: int = 11) -> Any:
    """A user's module under its own names, its weights moved off the seeded ones."""
    net = seeded_net(config, names)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net


@pytest.mark.parametrize(
    ("names", "prefixes"),
    [
        (("embedding", "lstm", "fc"), None),
        (("embed", "rnn", "head"), None),
        (("encoder", "gru_stack", "decoder"), None),
        (("tok", "core", "out"), "embedding=tok,core=core,head=out"),
    ],
)  # fmt: skip
async def test_a_trained_state_dict_is_served_under_its_own_names(
    fresh_client: httpx.AsyncClient, names: tuple[str, str, str], prefixes: str | None
) -> None:
    from safetensors.torch import save

    c = fresh_client
    assert (
        await c.post("/v1/models", json={"name": "clf", "config": CLASSIFIER})
    ).status_code == 201
    net = trained_net(CLASSIFIER, names)
    params = {"prefixes": prefixes} if prefixes else None
    r = await c.put("/v1/models/clf/weights", content=save(net.state_dict()),
                    headers={"Content-Type": "application/octet-stream"}, params=params)  # fmt: skip
    assert r.status_code == 200, r.text
    ids = np.array([[1, 2, 3, 4], [5, 6, 0, 0]])
    body = {"input": ids.tolist(), "lengths": [4, 2], "output_encoding": "b64"}
    got = (await c.post("/v1/models/clf/forward", json=body)).json()
    with torch.no_grad():
        out, _, y = net.eval()(torch.from_numpy(ids), None, [4, 2])
    np.testing.assert_allclose(decode(got["softmax"]), y.numpy(), atol=1e-6)
    np.testing.assert_allclose(decode(got["output"]), out.numpy(), atol=1e-6)
    exported = (await c.get("/v1/models/clf/weights")).content  # stored under the model's names
    from safetensors.torch import load

    assert sorted(load(exported)) == sorted(
        ["embedding.weight", "head.weight", "head.bias"]
        + [f"rnn.{k}" for k in net.part(1).state_dict()]
    )


async def test_a_state_dict_that_does_not_fit_is_one_422_naming_everything(
    fresh_client: httpx.AsyncClient,
) -> None:
    from safetensors.torch import save

    c = fresh_client
    await c.post("/v1/models", json={"name": "clf", "config": CLASSIFIER})
    before = (await c.get("/v1/models/clf/weights")).content
    state = trained_net(CLASSIFIER, ("embedding", "lstm", "fc")).state_dict()
    state["fc.weight"] = torch.zeros(5, 6)  # a wrong shape
    del state["lstm.bias_hh_l0"]  # a missing tensor
    state["dropout.p"] = torch.zeros(1)  # an extra one
    r = await c.put("/v1/models/clf/weights", content=save(state),
                    headers={"Content-Type": "application/octet-stream"})  # fmt: skip
    assert r.status_code == 422, r.text
    where = {tuple(e["loc"]) for e in r.json()["errors"]}
    assert where == {("body", "head.weight"), ("body", "rnn.bias_hh_l0"), ("body", "dropout.p")}
    assert (await c.get("/v1/models/clf/weights")).content == before  # nothing stored
    r = await c.put("/v1/models/clf/weights", content=save(state), params={"prefixes": "head=nope"},
                    headers={"Content-Type": "application/octet-stream"})  # fmt: skip
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["query", "prefixes"]
    assert "no tensor has the head prefix 'nope'" in r.text


async def test_a_declared_2gb_tensor_in_a_tiny_file_is_refused(
    fresh_client: httpx.AsyncClient,
) -> None:
    import json
    import struct

    c = fresh_client
    await c.post("/v1/models", json={"name": "clf", "config": CLASSIFIER})
    header = json.dumps({"embedding.weight": {"dtype": "F32", "shape": [1 << 29, 1],
                                              "data_offsets": [0, 1 << 31]}}).encode()  # fmt: skip
    blob = struct.pack("<Q", len(header)) + header + b"\0" * 64
    r = await c.put("/v1/models/clf/weights", content=blob,
                    headers={"Content-Type": "application/octet-stream"})  # fmt: skip
    assert r.status_code == 422, r.text
    assert "safetensors" in r.text
    assert (await c.get("/readyz")).status_code == 200


async def test_the_open_inference_protocol_takes_int64_ids_and_answers_the_head(
    fresh_client: httpx.AsyncClient,
) -> None:
    c = fresh_client
    assert (
        await c.post("/v1/models", json={"name": "clf", "config": CLASSIFIER})
    ).status_code == 201
    meta = (await c.get("/v2/models/clf")).json()
    assert meta["inputs"][0] == {"name": "input", "datatype": "INT64", "shape": [-1, -1]}
    assert {"name": "softmax", "datatype": "FP32", "shape": [-1, 3]} in meta["outputs"]
    ids = np.array([[1, 2, 3], [4, 5, 0]])
    body: dict[str, Any] = {"inputs": [{"name": "input", "datatype": "INT64", "shape": [2, 3], "data": ids.ravel().tolist()},
                       {"name": "lengths", "datatype": "INT64", "shape": [2], "data": [3, 2]}],
            "outputs": [{"name": "softmax"}]}  # fmt: skip
    r = await c.post("/v2/models/clf/infer", json=body)
    assert r.status_code == 200, r.text
    [out] = r.json()["outputs"]
    assert (out["name"], out["shape"]) == ("softmax", [2, 3])
    want = model_forward(seeded_model_params(CLASSIFIER), CLASSIFIER, ids, lengths=[3, 2])
    np.testing.assert_allclose(np.reshape(out["data"], (2, 3)), head_of(want), atol=1e-6)
    body["inputs"][0]["datatype"] = "FP32"
    r = await c.post("/v2/models/clf/infer", json=body)
    assert r.status_code == 400
    assert "token ids: INT64 or INT32" in r.json()["error"]
    config = (await c.get("/v2/models/clf/config")).json()
    assert config["input"][0]["data_type"] == "TYPE_INT64"
    assert [o["name"] for o in config["output"]] == ["output", "h_n", "c_n", "softmax"]


@pytest.mark.redis
async def test_a_streamed_char_lstm_in_redis_equals_one_forward(
    anyio_backend: str, redis_server: Any
) -> None:
    async for c in open_client(make_settings(session_store=redis_server.url)):
        r = await c.post("/v1/models", json={"name": "char", "config": CHAR})
        assert r.status_code == 201, r.text
        ids = np.random.default_rng(4).integers(0, 12, (200,))
        heads = await stream_chunks(c, "char", list(ids.reshape(100, 2)), CHAR)
        want = model_forward(seeded_model_params(CHAR), CHAR, ids)
        np.testing.assert_allclose(np.concatenate(heads), head_of(want), atol=1e-5)
