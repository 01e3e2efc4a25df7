"""LSTM and GRU against the float64 NumPy oracle: the same axes as the RNN suite (layers, bias,
batch_first, bidirectional, projections, unbatched input, packed lengths, initial states), every
wire encoding and dtype, batch 0, and random configs of every mode."""

from __future__ import annotations

import itertools
import zlib
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from tests.oracle import forward, full_config, seeded_params, torch_module
from tests.support.helpers import TOLERANCE, b64, decode, flat

pytestmark = pytest.mark.anyio

LSTM_CONFIGS = [
    {"mode": "LSTM", "input_size": 3, "hidden_size": 5, "num_layers": layers, "bias": bias,
     "batch_first": batch_first, "bidirectional": bidir, "proj_size": proj, "seed": seed}
    for seed, (layers, bias, batch_first, bidir, proj) in enumerate(
        itertools.product((1, 2), (True, False), (False, True), (False, True), (0, 2))
    )
]  # fmt: skip
GRU_CONFIGS = [
    {"mode": "GRU", "input_size": 3, "hidden_size": 5, "num_layers": layers, "bias": bias,
     "batch_first": batch_first, "bidirectional": bidir, "seed": seed}
    for seed, (layers, bias, batch_first, bidir) in enumerate(
        itertools.product((1, 2), (True, False), (False, True), (False, True))
    )
]  # fmt: skip
INPUT_MODES = ("batched+state+lengths", "unbatched+state", "batched")
ENCODINGS = ("nested", "flat", "b64")


def case_id(config: dict[str, Any], mode: str) -> str:
    c = full_config(config)
    flags = [c["mode"], f"L{c['num_layers']}"]
    flags += [n for n in ("bias", "batch_first", "bidirectional") if c[n]]
    flags += [f"proj{c['proj_size']}"] if c["proj_size"] else []
    return "-".join(flags) + "-" + mode


def wire(arr: np.ndarray, encoding: str) -> Any:
    return {"nested": arr.tolist(), "flat": flat(arr), "b64": b64(arr)}[encoding]


def make_request(
    config: dict[str, Any], mode: str, encoding: str, rng: np.random.Generator
) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """A request body and the oracle's (output, h_n, c_n-or-None) for it."""
    c = full_config(config)
    seq_len, batch = 6, 4
    rows = (2 if c["bidirectional"] else 1) * c["num_layers"]
    batch_dims: tuple[int, ...] = ()
    if mode.startswith("unbatched"):
        x = rng.standard_normal((seq_len, c["input_size"]))
    else:
        shape = (batch, seq_len) if c["batch_first"] else (seq_len, batch)
        x = rng.standard_normal((*shape, c["input_size"]))
        batch_dims = (batch,)
    x = x.astype(np.float32).astype(np.float64)  # the values the float32 model sees
    body: dict[str, Any] = {"config": config, "input": wire(x, encoding),
                            "output_encoding": encoding}  # fmt: skip
    h0 = c0 = None
    if "state" in mode:
        h0 = rng.standard_normal((rows, *batch_dims, c["proj_size"] or c["hidden_size"]))
        h0 = h0.astype(np.float32).astype(np.float64)
        body["h0"] = wire(h0, encoding)
        if c["mode"] == "LSTM":
            c0 = rng.standard_normal((rows, *batch_dims, c["hidden_size"]))
            c0 = c0.astype(np.float32).astype(np.float64)
            body["c0"] = wire(c0, encoding)
    lengths = [6, 1, 3, 5] if "lengths" in mode else None
    if lengths:
        body["lengths"] = lengths
    return body, forward(seeded_params(config), config, x, h0, c0, lengths)


def check(
    got: dict[str, Any], want: tuple[np.ndarray, np.ndarray, np.ndarray | None], atol: float
) -> None:
    out, h_n, c_n = want
    assert got["output_shape"] == list(out.shape)
    assert got["h_n_shape"] == list(h_n.shape)
    np.testing.assert_allclose(decode(got["output"]), out, atol=atol)
    np.testing.assert_allclose(decode(got["h_n"]), h_n, atol=atol)
    if c_n is None:
        assert "c_n" not in got
        assert "c_n_shape" not in got
    else:
        assert got["c_n_shape"] == list(c_n.shape)
        np.testing.assert_allclose(decode(got["c_n"]), c_n, atol=atol)


CASES = [
    (c, m, ENCODINGS[(i + j) % 3])
    for i, c in enumerate(LSTM_CONFIGS + GRU_CONFIGS)
    for j, m in enumerate(INPUT_MODES)
]


@pytest.mark.parametrize(
    ("config", "mode", "encoding"), CASES, ids=[case_id(c, m) for c, m, _ in CASES]
)
async def test_lstm_and_gru_match_oracle(
    client: httpx.AsyncClient, config: dict[str, Any], mode: str, encoding: str
) -> None:
    rng = np.random.default_rng(zlib.crc32(case_id(config, mode).encode()))
    body, want = make_request(config, mode, encoding, rng)
    r = await client.post("/v1/rnn/forward", json=body)
    assert r.status_code == 200, r.text
    check(r.json(), want, TOLERANCE["float32"])


def random_config(mode: str, rng: np.random.Generator) -> dict[str, Any]:
    hidden = int(rng.integers(1, 9))
    config: dict[str, Any] = {
        "mode": mode,
        "input_size": int(rng.integers(1, 7)),
        "hidden_size": hidden,
        "num_layers": int(rng.integers(1, 4)),
        "bias": bool(rng.integers(2)),
        "batch_first": bool(rng.integers(2)),
        "bidirectional": bool(rng.integers(2)),
        "dropout": float(rng.choice([0.0, 0.25])),
        "seed": int(rng.integers(0, 2**31)),
    }
    if mode == "RNN":
        config["nonlinearity"] = str(rng.choice(["tanh", "relu"]))
    if mode == "LSTM" and hidden > 1 and rng.integers(2):
        config["proj_size"] = int(rng.integers(1, hidden))
    return config


RANDOM = [(mode, i) for mode in ("RNN", "LSTM", "GRU") for i in range(8)]


@pytest.mark.parametrize(("mode", "i"), RANDOM, ids=[f"{m}-{i}" for m, i in RANDOM])
async def test_random_configs_match_oracle(client: httpx.AsyncClient, mode: str, i: int) -> None:
    rng = np.random.default_rng(1000 * i + zlib.crc32(mode.encode()))
    config = random_config(mode, rng)
    input_mode, encoding = INPUT_MODES[i % 3], ENCODINGS[(i // 3) % 3]
    body, want = make_request(config, input_mode, encoding, rng)
    r = await client.post("/v1/rnn/forward", json=body)
    assert r.status_code == 200, f"{config}: {r.text}"
    check(r.json(), want, TOLERANCE["float32"])


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
@pytest.mark.parametrize("dtype", ["float64", "float16", "bfloat16"])
@pytest.mark.parametrize("encoding", ["nested", "flat", "b64"])
async def test_dtypes_match_oracle(
    client: httpx.AsyncClient, mode: str, dtype: str, encoding: str
) -> None:
    config = {"mode": mode, "input_size": 4, "hidden_size": 6, "num_layers": 2,
              "bidirectional": True, "dtype": dtype}  # fmt: skip
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.standard_normal((5, 2, 4))).to(getattr(torch, dtype))
    x64 = x.double().numpy()  # the values the model actually sees
    body = {"config": config, "output_encoding": encoding,
            "input": {"nested": x64.tolist(), "flat": flat(x64, dtype),
                      "b64": b64(x64, dtype)}[encoding]}  # fmt: skip
    r = await client.post("/v1/rnn/forward", json=body)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["dtype"] == dtype
    if encoding != "nested":
        assert got["c_n" if mode == "LSTM" else "h_n"]["dtype"] == dtype
    check(got, forward(seeded_params(config), config, x64), TOLERANCE[dtype])


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
async def test_batch_zero(
    client: httpx.AsyncClient, mode: str, bidirectional: bool, with_lengths: bool
) -> None:
    config = {"mode": mode, "input_size": 3, "hidden_size": 4, "num_layers": 2,
              "bidirectional": bidirectional}  # fmt: skip
    if mode == "LSTM":
        config["proj_size"] = 2
    rows = 4 if bidirectional else 2
    body: dict[str, Any] = {"config": config, "input": b64(np.zeros((5, 0, 3))),
                            "output_encoding": "flat"}  # fmt: skip
    if with_lengths:
        body["lengths"] = []
        body["h0"] = flat(np.zeros((rows, 0, 2 if mode == "LSTM" else 4)))
        if mode == "LSTM":
            body["c0"] = flat(np.zeros((rows, 0, 4)))
    r = await client.post("/v1/rnn/forward", json=body)
    assert r.status_code == 200, r.text
    got = r.json()
    d = 2 if bidirectional else 1
    h = 2 if mode == "LSTM" else 4
    assert got["output_shape"] == [5, 0, d * h]
    assert got["h_n_shape"] == [rows, 0, h]
    if mode == "LSTM":
        assert got["c_n_shape"] == [rows, 0, 4]
    else:
        assert "c_n" not in got


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
async def test_seeded_weights_and_inert_dropout_equal_local_torch(
    client: httpx.AsyncClient, mode: str
) -> None:
    """seed and dropout as for RNN: torch.manual_seed(seed); nn.<mode>(..., dropout) in eval."""
    config = {"mode": mode, "input_size": 3, "hidden_size": 4, "num_layers": 2, "dropout": 0.5,
              "seed": 77}  # fmt: skip
    x = np.random.default_rng(5).standard_normal((7, 2, 3)).astype(np.float32)
    module = torch_module(config).eval()
    with torch.inference_mode():
        out, final = module(torch.from_numpy(x))
    h_n = final[0] if mode == "LSTM" else final
    r = await client.post(
        "/v1/rnn/forward", json={"config": config, "input": b64(x), "output_encoding": "b64"}
    )
    assert r.status_code == 200, r.text
    got = r.json()
    np.testing.assert_allclose(decode(got["output"]), out.numpy(), atol=1e-6)
    np.testing.assert_allclose(decode(got["h_n"]), h_n.numpy(), atol=1e-6)
    if mode == "LSTM":
        np.testing.assert_allclose(decode(got["c_n"]), final[1].numpy(), atol=1e-6)


async def test_packed_lstm_state_is_each_sequences_own_last_step(
    client: httpx.AsyncClient,
) -> None:
    """With lengths, h_n and c_n of each sequence equal that sequence run alone."""
    config = {"mode": "LSTM", "input_size": 3, "hidden_size": 5, "num_layers": 2,
              "bidirectional": True, "proj_size": 3}  # fmt: skip
    rng = np.random.default_rng(9)
    x = rng.standard_normal((6, 3, 3)).astype(np.float32)
    lengths = [6, 2, 4]
    r = await client.post(
        "/v1/rnn/forward",
        json={"config": config, "input": b64(x), "lengths": lengths, "output_encoding": "b64"},
    )
    assert r.status_code == 200, r.text
    got = r.json()
    for n, length in enumerate(lengths):
        alone = await client.post(
            "/v1/rnn/forward",
            json={"config": config, "input": b64(x[:length, n]), "output_encoding": "b64"},
        )
        one = alone.json()
        np.testing.assert_allclose(decode(got["h_n"])[:, n], decode(one["h_n"]), atol=1e-6)
        np.testing.assert_allclose(decode(got["c_n"])[:, n], decode(one["c_n"]), atol=1e-6)
        np.testing.assert_allclose(
            decode(got["output"])[:length, n], decode(one["output"]), atol=1e-6
        )
        assert not decode(got["output"])[length:, n].any()  # padding is 0
