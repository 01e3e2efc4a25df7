"""The service's answers against the float64 NumPy oracle, over the whole config space."""

from __future__ import annotations

import itertools
import zlib
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from tests.oracle import rnn_forward, seeded_params
from tests.support.helpers import TOLERANCE, b64, decode, flat

pytestmark = pytest.mark.anyio

CONFIGS = [
    {
        "input_size": 3,
        "hidden_size": 5,
        "num_layers": layers,
        "nonlinearity": act,
        "bias": bias,
        "batch_first": batch_first,
        "bidirectional": bidir,
        "seed": seed,
    }
    for seed, (layers, act, bias, batch_first, bidir) in enumerate(
        itertools.product((1, 2), ("tanh", "relu"), (True, False), (False, True), (False, True))
    )
]
MODES = ("batched+h0+lengths", "unbatched+h0", "batched")
ENCODINGS = ("nested", "flat", "b64")


def _case_id(config: dict[str, Any], mode: str) -> str:
    flags = [f"L{config['num_layers']}", config["nonlinearity"]]
    flags += [n for n in ("bias", "batch_first", "bidirectional") if config[n]]
    return "-".join(flags) + "-" + mode


def _make_request(
    config: dict[str, Any], mode: str, rng: np.random.Generator, encoding: str
) -> tuple[dict[str, Any], np.ndarray, np.ndarray | None, list[int] | None]:
    seq_len, batch = 6, 4
    dirs = 2 if config["bidirectional"] else 1
    rows = dirs * config["num_layers"]
    if mode.startswith("unbatched"):
        x = rng.standard_normal((seq_len, config["input_size"]))
        h0 = rng.standard_normal((rows, config["hidden_size"]))
    else:
        shape = (batch, seq_len) if config["batch_first"] else (seq_len, batch)
        x = rng.standard_normal((*shape, config["input_size"]))
        h0 = rng.standard_normal((rows, batch, config["hidden_size"]))
    x = x.astype(np.float32).astype(np.float64)
    h0 = h0.astype(np.float32).astype(np.float64)
    lengths = [6, 1, 3, 5] if "lengths" in mode else None
    body: dict[str, Any] = {"config": config, "output_encoding": encoding}
    if encoding == "nested":
        body["input"] = x.tolist()
    else:
        body["input"] = flat(x) if encoding == "flat" else b64(x)
    use_h0 = "h0" in mode
    if use_h0:
        body["h0"] = h0.tolist()
    if lengths:
        body["lengths"] = lengths
    return body, x, (h0 if use_h0 else None), lengths


@pytest.mark.parametrize(
    ("config", "mode", "encoding"),
    [(c, m, ENCODINGS[(i + j) % 3]) for i, c in enumerate(CONFIGS) for j, m in enumerate(MODES)],
    ids=[_case_id(c, m) for c in CONFIGS for m in MODES],
)
async def test_inline_forward_matches_oracle(
    client: httpx.AsyncClient, config: dict[str, Any], mode: str, encoding: str
) -> None:
    rng = np.random.default_rng(zlib.crc32(_case_id(config, mode).encode()))
    body, x, h0, lengths = _make_request(config, mode, rng, encoding)
    r = await client.post("/v1/rnn/forward", json=body)
    assert r.status_code == 200, r.text
    got = r.json()
    want_out, want_hn = rnn_forward(seeded_params(config), config, x, h0, lengths)
    assert got["output_shape"] == list(want_out.shape)
    assert got["h_n_shape"] == list(want_hn.shape)
    np.testing.assert_allclose(decode(got["output"]), want_out, atol=TOLERANCE["float32"])
    np.testing.assert_allclose(decode(got["h_n"]), want_hn, atol=TOLERANCE["float32"])


@pytest.mark.parametrize("dtype", ["float64", "float16", "bfloat16"])
@pytest.mark.parametrize("encoding", ["nested", "flat", "b64"])
async def test_dtypes_match_oracle(client: httpx.AsyncClient, dtype: str, encoding: str) -> None:
    config = {"input_size": 4, "hidden_size": 6, "num_layers": 2, "bidirectional": True,
              "dtype": dtype}  # fmt: skip
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.standard_normal((5, 2, 4))).to(getattr(torch, dtype))
    x64 = x.double().numpy()  # the values the model actually sees
    wire = {"nested": x64.tolist(), "flat": flat(x64, dtype), "b64": b64(x64, dtype)}[encoding]
    r = await client.post(
        "/v1/rnn/forward", json={"config": config, "input": wire, "output_encoding": encoding}
    )
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["dtype"] == dtype
    if encoding != "nested":
        assert got["output"]["dtype"] == dtype
    want_out, want_hn = rnn_forward(seeded_params(config), config, x64)
    np.testing.assert_allclose(decode(got["output"]), want_out, atol=TOLERANCE[dtype])
    np.testing.assert_allclose(decode(got["h_n"]), want_hn, atol=TOLERANCE[dtype])


async def test_seed_example_equals_local_torch(client: httpx.AsyncClient) -> None:
    """The README's example: the default model is torch.manual_seed(0); nn.RNN(10, 20, 2)."""
    torch.manual_seed(0)
    rnn = torch.nn.RNN(10, 20, 2)
    x, h0 = torch.randn(5, 3, 10), torch.randn(2, 3, 20)
    with torch.no_grad():
        out, hn = rnn(x, h0)
    r = await client.post(
        "/v1/models/default/forward", json={"input": x.tolist(), "h0": h0.tolist()}
    )
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["output_shape"] == [5, 3, 20]
    assert got["h_n_shape"] == [2, 3, 20]
    assert got["model"] == "default"
    np.testing.assert_allclose(np.asarray(got["output"]), out.numpy(), atol=1e-6)
    np.testing.assert_allclose(np.asarray(got["h_n"]), hn.numpy(), atol=1e-6)
    want_out, want_hn = rnn_forward(
        seeded_params({"input_size": 10, "hidden_size": 20, "num_layers": 2}),
        {"input_size": 10, "hidden_size": 20, "num_layers": 2},
        x.double().numpy(),
        h0.double().numpy(),
    )
    np.testing.assert_allclose(np.asarray(got["output"]), want_out, atol=1e-5)
    np.testing.assert_allclose(np.asarray(got["h_n"]), want_hn, atol=1e-5)


async def test_nonzero_seed_and_dropout_reproducible(client: httpx.AsyncClient) -> None:
    """seed picks the weights exactly as torch.manual_seed does; dropout is inert (eval mode)."""
    config = {"input_size": 3, "hidden_size": 4, "num_layers": 2, "dropout": 0.5, "seed": 1234}
    x = np.random.default_rng(5).standard_normal((7, 2, 3)).astype(np.float32)
    torch.manual_seed(1234)
    rnn = torch.nn.RNN(3, 4, 2, dropout=0.5).eval()
    with torch.inference_mode():
        out, hn = rnn(torch.from_numpy(x))
    answers = []
    for _ in range(2):
        r = await client.post("/v1/rnn/forward", json={"config": config, "input": b64(x),
                                                       "output_encoding": "b64"})  # fmt: skip
        assert r.status_code == 200, r.text
        answers.append(r.json())
    assert answers[0]["output"] == answers[1]["output"]
    np.testing.assert_allclose(decode(answers[0]["output"]), out.numpy(), atol=1e-6)
    np.testing.assert_allclose(decode(answers[0]["h_n"]), hn.numpy(), atol=1e-6)
