"""Clients against the real server: tritonclient (written by nobody here) and service.client."""

from __future__ import annotations

import asyncio
import contextlib
import warnings

import httpx
import numpy as np
import pytest
import torch

from service.client import AsyncClient, BadRequest, Client, Conflict, NotFound
from tests.oracle import lstm_forward, rnn_forward, seeded_params

pytestmark = pytest.mark.e2e
SEED = {"input_size": 10, "hidden_size": 20, "num_layers": 2}

with warnings.catch_warnings():  # gevent's import-time deprecation notices are not ours
    warnings.simplefilter("ignore")
    import tritonclient.http as triton


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_tritonclient_infer(live_server: str, binary: bool, with_state: bool) -> None:
    rng = np.random.default_rng(int(binary) * 2 + int(with_state))
    x = rng.standard_normal((6, 3, 10)).astype(np.float32)
    h0 = rng.standard_normal((2, 3, 20)).astype(np.float32)
    lengths = np.array([6, 2, 4], dtype=np.int64)
    inputs = [triton.InferInput("input", list(x.shape), "FP32")]
    inputs[0].set_data_from_numpy(x, binary_data=binary)
    if with_state:
        inputs.append(triton.InferInput("h0", list(h0.shape), "FP32"))
        inputs[1].set_data_from_numpy(h0, binary_data=binary)
        inputs.append(triton.InferInput("lengths", [3], "INT64"))
        inputs[2].set_data_from_numpy(lengths, binary_data=binary)
    outputs = [triton.InferRequestedOutput("output", binary_data=binary),
               triton.InferRequestedOutput("h_n", binary_data=binary)]  # fmt: skip
    client = triton.InferenceServerClient(url=live_server.removeprefix("http://"))
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("default")
        meta = client.get_model_metadata("default")
        assert [i["name"] for i in meta["inputs"]] == ["input", "h0", "lengths"]
        result = client.infer("default", inputs, outputs=outputs)
    finally:
        client.close()
    out, hn = result.as_numpy("output"), result.as_numpy("h_n")
    want_out, want_hn = rnn_forward(
        seeded_params(SEED),
        SEED,
        x,
        h0 if with_state else None,
        list(lengths) if with_state else None,
    )
    np.testing.assert_allclose(out, want_out, atol=1e-5)
    np.testing.assert_allclose(hn, want_hn, atol=1e-5)
    v1 = httpx.post(f"{live_server}/v1/models/default/forward", json={
        "input": x.tolist(), **({"h0": h0.tolist(), "lengths": lengths.tolist()} if with_state else {})
    }, timeout=30).json()  # fmt: skip
    np.testing.assert_allclose(out, np.asarray(v1["output"]), atol=1e-6)
    np.testing.assert_allclose(hn, np.asarray(v1["h_n"]), atol=1e-6)


def test_tritonclient_error(live_server: str) -> None:
    from tritonclient.utils import InferenceServerException

    x = np.zeros((2, 1, 7), dtype=np.float32)
    inp = triton.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    client = triton.InferenceServerClient(url=live_server.removeprefix("http://"))
    try:
        with pytest.raises(InferenceServerException, match="Expected 10, got 7"):
            client.infer("default", [inp])
    finally:
        client.close()


def test_python_client_sync(live_server: str) -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((5, 3, 10)).astype(np.float32)
    h0 = rng.standard_normal((2, 3, 20)).astype(np.float32)
    with Client(live_server) as rnn:
        out, hn = rnn.forward("default", x, h0)
        want_out, want_hn = rnn_forward(seeded_params(SEED), SEED, x, h0)
        np.testing.assert_allclose(out, want_out, atol=1e-5)
        np.testing.assert_allclose(hn, want_hn, atol=1e-5)
        # torch in, torch out; the same numbers as torch itself
        torch.manual_seed(0)
        ref = torch.nn.RNN(10, 20, 2)
        xt = torch.from_numpy(x)
        t_out, t_hn = rnn.forward("default", xt, lengths=[5, 5, 3])
        assert isinstance(t_out, torch.Tensor)
        with torch.no_grad():
            packed = torch.nn.utils.rnn.pack_padded_sequence(
                xt, torch.tensor([5, 5, 3]), enforce_sorted=False
            )
            r_out, r_hn = ref(packed)
            r_out, _ = torch.nn.utils.rnn.pad_packed_sequence(r_out, total_length=5)
        torch.testing.assert_close(t_out, r_out, atol=1e-6, rtol=0)
        torch.testing.assert_close(t_hn, r_hn, atol=1e-6, rtol=0)

        config = {"input_size": 3, "hidden_size": 4, "dtype": "bfloat16"}
        assert rnn.register("client-bf16", config)["name"] == "client-bf16"
        with pytest.raises(Conflict):
            rnn.register("client-bf16", {**config, "seed": 1})
        torch.manual_seed(3)
        trained = torch.nn.RNN(3, 4)
        rnn.upload_weights("client-bf16", trained.state_dict())
        exported = rnn.export_weights("client-bf16")
        from safetensors.torch import load

        assert torch.equal(load(exported)["weight_hh_l0"], trained.state_dict()["weight_hh_l0"])
        xb = torch.randn(4, 2, 3).to(torch.bfloat16)
        b_out, _ = rnn.forward("client-bf16", xb)
        assert b_out.dtype == torch.bfloat16
        with torch.no_grad():
            want = trained.to(torch.bfloat16)(xb)[0]
        torch.testing.assert_close(b_out, want, atol=1e-2, rtol=0)
        assert "client-bf16" in [m["name"] for m in rnn.list_models()]
        with pytest.raises(BadRequest) as bad:
            rnn.forward("default", np.zeros((2, 1, 3), dtype=np.float32))
        assert "Expected 10, got 3" in bad.value.detail
        rnn.delete_model("client-bf16")
        with pytest.raises(NotFound):
            rnn.get_model("client-bf16")


def test_python_client_async(live_server: str) -> None:
    async def main() -> None:
        x = np.random.default_rng(6).standard_normal((3, 4, 10)).astype(np.float32)
        async with AsyncClient(live_server) as rnn:
            answers = await asyncio.gather(
                *(rnn.forward("default", x[:, i : i + 1]) for i in range(4))
            )
            together, _ = await rnn.forward("default", x)
        for i, (out, _) in enumerate(answers):
            np.testing.assert_allclose(out[:, 0], together[:, i], atol=1e-6)

    asyncio.run(main())


LSTM = {"mode": "LSTM", "input_size": 4, "hidden_size": 6, "num_layers": 2, "proj_size": 3}


def test_lstm_through_tritonclient_and_the_python_client(live_server: str) -> None:
    """c0 in and c_n out over the binary extension, by a client written elsewhere and by ours."""
    with Client(live_server) as rnn:
        with contextlib.suppress(Conflict):  # registered by an earlier run on this server
            rnn.register("e2e-lstm", LSTM)
        rng = np.random.default_rng(12)
        x = rng.standard_normal((5, 2, 4)).astype(np.float32)
        h0 = rng.standard_normal((2, 2, 3)).astype(np.float32)
        c0 = rng.standard_normal((2, 2, 6)).astype(np.float32)
        want_out, want_hn, want_cn = lstm_forward(seeded_params(LSTM), LSTM, x, h0, c0)

        out, (hn, cn) = rnn.forward("e2e-lstm", x, (h0, c0))
        np.testing.assert_allclose(out, want_out, atol=1e-5)
        np.testing.assert_allclose(hn, want_hn, atol=1e-5)
        np.testing.assert_allclose(cn, want_cn, atol=1e-5)
        # torch in, torch out, exactly as nn.LSTM answers
        t_out, (_, t_cn) = rnn.forward(
            "e2e-lstm", torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0))
        )
        assert isinstance(t_out, torch.Tensor)
        assert isinstance(t_cn, torch.Tensor)
        np.testing.assert_allclose(t_cn.numpy(), want_cn, atol=1e-5)

    inputs = []
    for name, arr in (("input", x), ("h0", h0), ("c0", c0)):
        item = triton.InferInput(name, list(arr.shape), "FP32")
        item.set_data_from_numpy(arr, binary_data=True)
        inputs.append(item)
    client = triton.InferenceServerClient(url=live_server.removeprefix("http://"))
    try:
        meta = client.get_model_metadata("e2e-lstm")
        assert [i["name"] for i in meta["outputs"]] == ["output", "h_n", "c_n"]
        result = client.infer(
            "e2e-lstm", inputs, outputs=[triton.InferRequestedOutput("c_n", binary_data=True)]
        )
    finally:
        client.close()
    np.testing.assert_allclose(result.as_numpy("c_n"), want_cn, atol=1e-5)


def test_tritonclient_surface(live_server: str) -> None:
    """The calls tritonclient and KServe tooling make besides infer: the model's config, the
    repository extension (index, load, unload), statistics, versioned paths, errors they can
    decode on every /v2 path."""
    client = triton.InferenceServerClient(url=live_server.removeprefix("http://"))
    x = np.random.default_rng(9).standard_normal((4, 1, 10)).astype(np.float32)
    inputs = [triton.InferInput("input", list(x.shape), "FP32")]
    inputs[0].set_data_from_numpy(x)
    got = client.infer("default", inputs, model_version="1").as_numpy("output")
    want, _ = rnn_forward(seeded_params(SEED), SEED, x)
    np.testing.assert_allclose(got, want, atol=1e-5)

    config = client.get_model_config("default")
    assert config["name"] == "default"
    assert [i["name"] for i in config["input"]] == ["input", "h0", "lengths"]
    assert client.get_model_metadata("default", model_version="1")["versions"] == ["1"]
    assert client.is_model_ready("default", model_version="1")

    client.load_model("default")
    index = {m["name"]: m for m in client.get_model_repository_index()}
    assert index["default"]["state"] == "READY"
    client.unload_model("default")
    index = {m["name"]: m for m in client.get_model_repository_index()}
    assert index["default"]["state"] == "UNAVAILABLE"
    client.load_model("default")

    stats = client.get_inference_statistics("default")["model_stats"][0]
    assert stats["name"] == "default"
    assert stats["inference_count"] >= 1
    assert stats["execution_count"] >= 1
    assert stats["last_inference"] > 0
    assert stats["inference_stats"]["compute_infer"]["count"] >= 1
    assert stats["inference_stats"]["queue"]["ns"] > 0
    every = client.get_inference_statistics()["model_stats"]
    assert "default" in {s["name"] for s in every}

    with pytest.raises(triton.InferenceServerException, match="no version '2'"):
        client.infer("default", inputs, model_version="2")
    with pytest.raises(triton.InferenceServerException, match="no route"):
        client.get_trace_settings()  # not served: still an error tritonclient can read
    r = httpx.get(f"{live_server}/v2/no/such/path")
    assert r.status_code == 404
    assert r.json() == {"error": "no route GET /v2/no/such/path"}
