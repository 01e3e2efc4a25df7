"""Edge cases of docs/semantics.md: each asserts the exact status, and the shapes
or the message torch would give."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

from tests.oracle import rnn_forward, seeded_params
from tests.support.helpers import b64, decode, flat

pytestmark = pytest.mark.anyio

SMALL = {"input_size": 3, "hidden_size": 4}


async def forward(client: httpx.AsyncClient, config: dict[str, Any], **body: Any) -> httpx.Response:
    return await client.post("/v1/rnn/forward", json={"config": config, **body})


def problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    assert "Traceback" not in r.text
    assert "/service/" not in r.text
    return body


def the_error(r: httpx.Response, loc: list[Any], *fragments: str) -> None:
    body = problem(r, 422)
    matching = [e for e in body["errors"] if e["loc"] == loc]
    assert matching, f"no error at {loc}: {body['errors']}"
    for fragment in fragments:
        assert fragment in matching[0]["msg"], matching[0]["msg"]


# --- constructor ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("patch", "loc", "fragment"),
    [
        ({"input_size": 0}, ["input_size"], "input_size must be greater than zero"),
        ({"hidden_size": -1}, ["hidden_size"], "hidden_size must be greater than zero"),
        ({"num_layers": 0}, ["num_layers"], "num_layers must be greater than zero"),
        ({"input_size": 2.5}, ["input_size"], "should be of type int, got: float"),
        ({"nonlinearity": "sigmoid"}, ["nonlinearity"], "Unknown nonlinearity 'sigmoid'"),
        ({"nonlinearity": "TANH"}, ["nonlinearity"], "Select from 'tanh' or 'relu'"),
        ({"dropout": 1.5}, ["dropout"], "dropout should be a number in range [0, 1]"),
        ({"dropout": True}, ["dropout"], "dropout should be a number in range [0, 1]"),
        ({"bias": 1}, ["bias"], "bias should be of type bool, got: int"),
        ({"batch_first": "yes"}, ["batch_first"], "batch_first should be of type bool, got: str"),
        ({"proj_size": 2}, [], "proj_size argument is only supported for LSTM, not RNN or GRU"),
        ({"cell": "lstm"}, ["cell"], "Extra inputs are not permitted"),
        ({"dtype": "int8"}, ["dtype"], "'float32', 'float16', 'bfloat16' or 'float64'"),
    ],
)
async def test_invalid_config(
    client: httpx.AsyncClient, patch: dict[str, Any], loc: list[str], fragment: str
) -> None:
    r = await forward(client, {**SMALL, **patch}, input=[[0.0, 0.0, 0.0]])
    the_error(r, ["body", "config", *loc], fragment)


async def test_missing_config_field(client: httpx.AsyncClient) -> None:
    r = await forward(client, {"input_size": 3}, input=[[0.0, 0.0, 0.0]])
    the_error(r, ["body", "config", "hidden_size"], "Field required")


async def test_config_over_server_limits(client: httpx.AsyncClient) -> None:
    r = await forward(client, {"input_size": 3, "hidden_size": 100_000}, input=[[0.0] * 3])
    the_error(r, ["body", "config", "hidden_size"], "at most 8192", "got 100000")
    r = await forward(
        client, {"input_size": 3, "hidden_size": 4, "num_layers": 99}, input=[[0.0] * 3]
    )
    the_error(r, ["body", "config", "num_layers"], "at most 16")


async def test_dropout_with_one_layer_is_accepted(client: httpx.AsyncClient) -> None:
    """torch only warns for dropout > 0 with num_layers 1; the service serves it."""
    r = await forward(client, {**SMALL, "dropout": 0.3}, input=[[0.0, 1.0, 2.0]])
    assert r.status_code == 200, r.text


# --- forward, in torch's order ----------------------------------------------------------------
async def test_1d_input(client: httpx.AsyncClient) -> None:
    r = await forward(client, SMALL, input=[1.0, 2.0, 3.0])
    the_error(r, ["body", "input"], "RNN: Expected input to be 2D or 3D, got 1D tensor instead")


async def test_4d_input(client: httpx.AsyncClient) -> None:
    r = await forward(
        client,
        SMALL,
        input={"shape": [1, 1, 1, 3], "dtype": "float32", "b64": b64(np.zeros(3))["b64"]},
    )
    # shapes of more than 3 dims are refused by the schema's maxItems and by torch's rule
    body = problem(r, 422)
    assert "2D or 3D, got 4D" in body["errors"][0]["msg"]


async def test_unbatched_input_with_3d_h0(client: httpx.AsyncClient) -> None:
    r = await forward(
        client, SMALL, input=np.zeros((2, 3)).tolist(), h0=np.zeros((1, 1, 4)).tolist()
    )
    the_error(
        r, ["body", "h0"], "For unbatched 2-D input, hx should also be 2-D but got 3-D tensor"
    )


async def test_batched_input_with_2d_h0(client: httpx.AsyncClient) -> None:
    r = await forward(
        client, SMALL, input=np.zeros((2, 1, 3)).tolist(), h0=np.zeros((1, 4)).tolist()
    )
    the_error(r, ["body", "h0"], "For batched 3-D input, hx should also be 3-D but got 2-D tensor")


async def test_input_dtype_differs_from_model(client: httpx.AsyncClient) -> None:
    r = await forward(client, SMALL, input=flat(np.zeros((2, 1, 3)), "float64"))
    the_error(
        r, ["body", "input", "dtype"],
        "RNN input dtype (torch.float64) does not match weight dtype (torch.float32)",
    )  # fmt: skip


async def test_input_size_mismatch(client: httpx.AsyncClient) -> None:
    r = await forward(client, SMALL, input=np.zeros((2, 1, 4)).tolist())
    the_error(r, ["body", "input"], "input.size(-1) must be equal to input_size. Expected 3, got 4")


async def test_hidden_size_mismatch(client: httpx.AsyncClient) -> None:
    config = {"input_size": 3, "hidden_size": 5}
    r = await forward(
        client, config, input=np.zeros((4, 2, 3)).tolist(), h0=np.zeros((1, 3, 5)).tolist()
    )
    the_error(r, ["body", "h0"], "Expected hidden size (1, 2, 5), got [1, 3, 5]")


async def test_h0_batch_dim_ignores_batch_first(client: httpx.AsyncClient) -> None:
    """h0 is (D*K, N, H) even when batch_first: an (N, D*K, H) h0 is refused."""
    config = {**SMALL, "batch_first": True, "num_layers": 2}
    x = np.zeros((3, 5, 3))  # N=3, L=5
    r = await forward(client, config, input=x.tolist(), h0=np.zeros((3, 2, 4)).tolist())
    the_error(r, ["body", "h0"], "Expected hidden size (2, 3, 4), got [3, 2, 4]")
    r = await forward(client, config, input=x.tolist(), h0=np.zeros((2, 3, 4)).tolist())
    assert r.status_code == 200, r.text
    assert r.json()["output_shape"] == [3, 5, 4]


async def test_seq_len_zero(client: httpx.AsyncClient) -> None:
    r = await forward(client, SMALL, input=flat(np.zeros((0, 2, 3))))
    the_error(r, ["body", "input"], "Expected sequence length to be larger than 0 in RNN")


@pytest.mark.parametrize("form", ["flat", "b64"])
@pytest.mark.parametrize("bidirectional", [False, True])
async def test_batch_zero(client: httpx.AsyncClient, form: str, bidirectional: bool) -> None:
    config = {**SMALL, "num_layers": 2, "bidirectional": bidirectional}
    wire = flat if form == "flat" else b64
    d = 2 if bidirectional else 1
    r = await forward(client, config, input=wire(np.zeros((5, 0, 3))), output_encoding=form)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["output_shape"] == [5, 0, d * 4]
    assert got["h_n_shape"] == [d * 2, 0, 4]
    assert decode(got["output"]).shape == (5, 0, d * 4)


async def test_batch_zero_with_lengths_and_h0(client: httpx.AsyncClient) -> None:
    r = await forward(
        client, SMALL, input=flat(np.zeros((5, 0, 3))), h0=flat(np.zeros((1, 0, 4))), lengths=[]
    )
    assert r.status_code == 200, r.text
    assert (r.json()["output_shape"], r.json()["h_n_shape"]) == ([5, 0, 4], [1, 0, 4])


# --- variable lengths -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("lengths", "loc", "fragment"),
    [
        ([3.0, 2], ["body", "lengths", 0], "Input should be a valid integer"),
        ([3, 2.5], ["body", "lengths", 1], "Input should be a valid integer"),
        ([6, 2], ["body", "lengths", 0], "each length must be in [1, 5], got 6"),
        ([3, 0], ["body", "lengths", 1], "greater than or equal to 1"),
        ([3], ["body", "lengths"], "expected 2 lengths (one per sequence in the batch), got 1"),
        ([True, 2], ["body", "lengths", 0], "Input should be a valid integer"),
    ],
)
async def test_invalid_lengths(
    client: httpx.AsyncClient, lengths: list[Any], loc: list[Any], fragment: str
) -> None:
    r = await forward(client, SMALL, input=np.zeros((5, 2, 3)).tolist(), lengths=lengths)
    the_error(r, loc, fragment)


async def test_lengths_with_unbatched_input(client: httpx.AsyncClient) -> None:
    r = await forward(client, SMALL, input=np.zeros((5, 3)).tolist(), lengths=[5])
    the_error(r, ["body", "lengths"], "only allowed with batched (3-D) input")


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
async def test_lengths_pack_padding_and_h_n(
    client: httpx.AsyncClient, batch_first: bool, bidirectional: bool
) -> None:
    """Unsorted lengths: output past a length is 0, h_n is each sequence's own last step, h0 is
    taken in the caller's order, and the reverse direction starts at each sequence's end."""
    config = {**SMALL, "num_layers": 2, "batch_first": batch_first, "bidirectional": bidirectional}
    rng = np.random.default_rng(11)
    lengths = [2, 5, 1]
    x = rng.standard_normal((3, 5, 3) if batch_first else (5, 3, 3)).astype(np.float32)
    d = 2 if bidirectional else 1
    h0 = rng.standard_normal((2 * d, 3, 4)).astype(np.float32)
    r = await forward(
        client, config, input=b64(x), h0=b64(h0), lengths=lengths, output_encoding="b64"
    )
    assert r.status_code == 200, r.text
    out, hn = decode(r.json()["output"]), decode(r.json()["h_n"])
    want_out, want_hn = rnn_forward(seeded_params(config), config, x, h0, lengths)
    np.testing.assert_allclose(out, want_out, atol=1e-5)
    np.testing.assert_allclose(hn, want_hn, atol=1e-5)
    seq_major = out.transpose(1, 0, 2) if batch_first else out
    for n, length in enumerate(lengths):
        assert np.all(seq_major[length:, n] == 0.0)
        # each sequence alone gives the same answer: the padding never leaks in
        alone = x[n : n + 1, :length] if batch_first else x[:length, n : n + 1]
        r1 = await forward(client, config, input=b64(alone), h0=b64(h0[:, n : n + 1].copy()))
        np.testing.assert_allclose(np.asarray(r1.json()["h_n"])[:, 0], hn[:, n], atol=1e-6)


async def test_padding_without_lengths_runs_over_padding(client: httpx.AsyncClient) -> None:
    """Without lengths, the whole padded batch runs: h_n differs from the packed answer."""
    x = np.zeros((5, 2, 3), dtype=np.float32)
    x[:, :, 0] = 1.0
    packed = await forward(client, SMALL, input=x.tolist(), lengths=[5, 2])
    padded = await forward(client, SMALL, input=x.tolist())
    assert packed.status_code == padded.status_code == 200
    packed_hn, padded_hn = np.asarray(packed.json()["h_n"]), np.asarray(padded.json()["h_n"])
    np.testing.assert_allclose(packed_hn[0, 0], padded_hn[0, 0], atol=1e-6)  # full length
    assert np.abs(packed_hn[0, 1] - padded_hn[0, 1]).max() > 1e-3  # padded ran 3 steps too many


# --- shapes and identities --------------------------------------------------------------------
async def test_unbatched_shapes_and_equivalence(client: httpx.AsyncClient) -> None:
    config = {**SMALL, "num_layers": 2, "bidirectional": True, "batch_first": True}
    x = np.random.default_rng(2).standard_normal((6, 3)).astype(np.float32)
    r = await forward(client, config, input=x.tolist())  # batch_first is ignored for 2-D input
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["output_shape"] == [6, 8]
    assert got["h_n_shape"] == [4, 4]
    rb = await forward(client, config, input=x[None].tolist())
    np.testing.assert_allclose(
        np.asarray(got["output"]), np.asarray(rb.json()["output"])[0], atol=1e-7
    )


async def test_bidirectional_h_n_identities(client: httpx.AsyncClient) -> None:
    config = {**SMALL, "num_layers": 3, "bidirectional": True}
    x = np.random.default_rng(4).standard_normal((7, 2, 3)).astype(np.float32)
    got = (await forward(client, config, input=x.tolist())).json()
    out, hn = np.asarray(got["output"]), np.asarray(got["h_n"])
    assert out.shape == (7, 2, 8)
    assert hn.shape == (6, 2, 4)
    np.testing.assert_array_equal(hn[-2], out[-1, :, :4])  # forward half ends at t = L-1
    np.testing.assert_array_equal(hn[-1], out[0, :, 4:])  # reverse half ends at t = 0


@pytest.mark.parametrize("encoding", ["nested", "flat", "b64"])
async def test_output_encodings_carry_the_same_values(
    client: httpx.AsyncClient, encoding: str
) -> None:
    x = np.random.default_rng(9).standard_normal((4, 2, 3)).astype(np.float32)
    ref = (await forward(client, SMALL, input=b64(x), output_encoding="b64")).json()
    got = (await forward(client, SMALL, input=x.tolist(), output_encoding=encoding)).json()
    np.testing.assert_array_equal(decode(got["output"]).astype(np.float32), decode(ref["output"]))
    assert got["output_shape"] == [4, 2, 4]
    assert got["h_n_shape"] == [1, 2, 4]


# --- tensor payloads --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("tensor", "loc", "fragment"),
    [
        ([[1.0, 2.0, 3.0], [1.0, 2.0]], ["body", "input"], "ragged"),
        # an array among the innermost numbers, of the same element count as a rectangle
        ([[1.0, 2.0, 3.0], [[1.0], 2.0, 3.0]], ["body", "input"], "ragged"),
        ([[1.0, "2", 3.0]], ["body", "input"], "expected numbers, got strings"),
        ([[1.0, None, 3.0]], ["body", "input"], "expected numbers"),
        ([[1.0, True, 3.0]], ["body", "input"], "expected numbers, got booleans"),
        ([[1e39, 0.0, 0.0]], ["body", "input"], "finite"),
        ("abc", ["body", "input"], "expected a tensor"),
        (
            {"shape": [1, 3], "dtype": "float32", "data": [1.0, 2.0]},
            ["body", "input", "data"],
            "needs 3 numbers, got 2",
        ),
        (
            {"shape": [1, 3], "dtype": "int32", "data": [1, 2, 3]},
            ["body", "input", "dtype"],
            "expected one of float32",
        ),
        (
            {"shape": [1, -3], "dtype": "float32", "data": []},
            ["body", "input", "shape"],
            "non-negative integers",
        ),
        (
            {"shape": [1, 3], "dtype": "float32", "b64": "AAAA"},
            ["body", "input", "b64"],
            "needs 12 bytes, got 3",
        ),
        ({"shape": [1, 3], "dtype": "float32", "b64": "!!"}, ["body", "input", "b64"], "base64"),
        (
            {"shape": [1, 3], "dtype": "float32", "b64": b64(np.array([[np.nan, 0, 0]]))["b64"]},
            ["body", "input", "b64"],
            "NaN or infinity",
        ),
        (
            {"shape": [1, 3], "dtype": "float32"},
            ["body", "input"],
            "exactly the keys shape, dtype and one of data or b64",
        ),
        (
            {"shape": [1, 3], "dtype": "float32", "data": [1, 2, 3], "b64": ""},
            ["body", "input"],
            "exactly the keys",
        ),
    ],
)
async def test_invalid_tensors(
    client: httpx.AsyncClient, tensor: Any, loc: list[Any], fragment: str
) -> None:
    r = await forward(client, SMALL, input=tensor)
    the_error(r, loc, fragment)


async def test_h0_float16_overflow_refused(client: httpx.AsyncClient) -> None:
    config = {**SMALL, "dtype": "float16"}
    r = await forward(client, config, input=[[0.0, 0.0, 0.0]], h0=[[70000.0, 0, 0, 0]])
    the_error(r, ["body", "h0"], "finite numbers within float16's range")


async def test_tensor_over_element_limit_is_413(client: httpx.AsyncClient) -> None:
    r = await forward(
        client, SMALL, input={"shape": [100000, 1000, 3], "dtype": "float32", "b64": ""}
    )
    body = problem(r, 413)
    assert "limit" in body["detail"]


# --- LSTM and GRU: each mode takes its torch class's arguments and state ------------------------
LSTM = {**SMALL, "mode": "LSTM"}
GRU = {**SMALL, "mode": "GRU"}


@pytest.mark.parametrize(
    ("config", "loc", "fragment"),
    [
        ({**LSTM, "nonlinearity": "tanh"}, [], "nonlinearity is an argument of nn.RNN only"),
        ({**GRU, "nonlinearity": "relu"}, [], "unexpected keyword argument 'nonlinearity'"),
        ({**GRU, "proj_size": 1}, [], "proj_size argument is only supported for LSTM"),
        ({**LSTM, "proj_size": 4}, [], "proj_size has to be smaller than hidden_size"),
        ({**LSTM, "proj_size": 9}, [], "proj_size has to be smaller than hidden_size"),
        (
            {**LSTM, "proj_size": -1},
            ["proj_size"],
            "proj_size should be a positive integer or zero",
        ),
        ({**LSTM, "proj_size": 1.5}, ["proj_size"], "proj_size should be of type int, got: float"),
        ({**SMALL, "mode": "lstm"}, ["mode"], "'RNN', 'LSTM' or 'GRU'"),
        ({**SMALL, "mode": "Transformer"}, ["mode"], "'RNN', 'LSTM' or 'GRU'"),
    ],
)
async def test_invalid_mode_arguments(
    client: httpx.AsyncClient, config: dict[str, Any], loc: list[str], fragment: str
) -> None:
    r = await forward(client, config, input=[[0.0, 0.0, 0.0]])
    the_error(r, ["body", "config", *loc], fragment)


async def test_proj_size_zero_is_accepted_by_every_mode(client: httpx.AsyncClient) -> None:
    for config in ({**SMALL, "proj_size": 0}, {**GRU, "proj_size": 0}, {**LSTM, "proj_size": 0}):
        r = await forward(client, config, input=[[0.0, 0.0, 0.0]])
        assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        (LSTM, "LSTM: Expected input to be 2D or 3D, got 1D instead"),
        (GRU, "GRU: Expected input to be 2D or 3D, got 1D instead"),
    ],
)
async def test_mode_input_rank(
    client: httpx.AsyncClient, config: dict[str, Any], fragment: str
) -> None:
    r = await forward(client, config, input=[1.0, 2.0, 3.0])
    the_error(r, ["body", "input"], fragment)


async def test_lstm_takes_h0_and_c0_together(client: httpx.AsyncClient) -> None:
    x = np.zeros((2, 1, 3)).tolist()
    r = await forward(client, LSTM, input=x, h0=np.zeros((1, 1, 4)).tolist())
    the_error(r, ["body", "c0"], "h0 and c0 together or neither; c0 is missing")
    r = await forward(client, LSTM, input=x, c0=np.zeros((1, 1, 4)).tolist())
    the_error(r, ["body", "h0"], "h0 and c0 together or neither; h0 is missing")


@pytest.mark.parametrize("config", [SMALL, GRU])
async def test_c0_belongs_to_lstm_only(client: httpx.AsyncClient, config: dict[str, Any]) -> None:
    r = await forward(
        client, config, input=np.zeros((2, 1, 3)).tolist(),
        h0=np.zeros((1, 1, 4)).tolist(), c0=np.zeros((1, 1, 4)).tolist(),
    )  # fmt: skip
    the_error(r, ["body", "c0"], "c0 is the cell state of an LSTM")


async def test_lstm_state_ranks(client: httpx.AsyncClient) -> None:
    r = await forward(
        client, LSTM, input=np.zeros((2, 1, 3)).tolist(),
        h0=np.zeros((1, 4)).tolist(), c0=np.zeros((1, 1, 4)).tolist(),
    )  # fmt: skip
    the_error(
        r, ["body", "h0"],
        "For batched 3-D input, hx and cx should also be 3-D but got (2-D, 3-D) tensors",
    )  # fmt: skip
    r = await forward(
        client, LSTM, input=np.zeros((2, 3)).tolist(),
        h0=np.zeros((1, 4)).tolist(), c0=np.zeros((1, 1, 4)).tolist(),
    )  # fmt: skip
    the_error(
        r, ["body", "c0"],
        "For unbatched 2-D input, hx and cx should also be 2-D but got (2-D, 3-D) tensors",
    )  # fmt: skip


async def test_gru_state_rank(client: httpx.AsyncClient) -> None:
    r = await forward(client, GRU, input=np.zeros((2, 1, 3)).tolist(), h0=np.zeros((1, 4)).tolist())
    the_error(r, ["body", "h0"], "For batched 3-D input, hx should also be 3-D but got 2-D tensor")


async def test_lstm_state_sizes_with_projection(client: httpx.AsyncClient) -> None:
    """With proj_size, h0 has proj_size features and c0 hidden_size; torch's messages name
    hidden[0] and hidden[1]."""
    config = {**LSTM, "hidden_size": 5, "proj_size": 2, "num_layers": 2}
    x = np.zeros((4, 3, 3)).tolist()
    r = await forward(
        client, config, input=x, h0=np.zeros((2, 3, 5)).tolist(), c0=np.zeros((2, 3, 5)).tolist()
    )
    the_error(r, ["body", "h0"], "Expected hidden[0] size (2, 3, 2), got [2, 3, 5]")
    r = await forward(
        client, config, input=x, h0=np.zeros((2, 3, 2)).tolist(), c0=np.zeros((2, 3, 2)).tolist()
    )
    the_error(r, ["body", "c0"], "Expected hidden[1] size (2, 3, 5), got [2, 3, 2]")
    r = await forward(
        client, config, input=x, h0=np.zeros((2, 3, 2)).tolist(), c0=np.zeros((2, 3, 5)).tolist()
    )
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["output_shape"], got["h_n_shape"], got["c_n_shape"]) == (
        [4, 3, 2], [2, 3, 2], [2, 3, 5],
    )  # fmt: skip


async def test_gru_hidden_size_mismatch(client: httpx.AsyncClient) -> None:
    r = await forward(
        client, GRU, input=np.zeros((4, 2, 3)).tolist(), h0=np.zeros((1, 3, 4)).tolist()
    )
    the_error(r, ["body", "h0"], "Expected hidden size (1, 2, 4), got [1, 3, 4]")


async def test_lstm_c0_dtype_differs_from_model(client: httpx.AsyncClient) -> None:
    r = await forward(
        client, LSTM, input=flat(np.zeros((2, 1, 3))),
        h0=flat(np.zeros((1, 1, 4))), c0=flat(np.zeros((1, 1, 4)), "float64"),
    )  # fmt: skip
    the_error(
        r, ["body", "c0", "dtype"], "LSTM cx dtype (torch.float64) does not match weight dtype"
    )


@pytest.mark.parametrize("config", [LSTM, GRU])
async def test_mode_seq_len_zero(client: httpx.AsyncClient, config: dict[str, Any]) -> None:
    r = await forward(client, config, input=flat(np.zeros((0, 2, 3))))
    the_error(r, ["body", "input"], "Expected sequence length to be larger than 0 in RNN")


async def test_existing_requests_default_to_rnn(client: httpx.AsyncClient) -> None:
    """No mode means nn.RNN: every request of the RNN-only API keeps its answer."""
    x = np.random.default_rng(1).standard_normal((3, 2, 3)).astype(np.float32)
    a = (await forward(client, SMALL, input=b64(x), output_encoding="b64")).json()
    b = (
        await forward(client, {**SMALL, "mode": "RNN"}, input=b64(x), output_encoding="b64")
    ).json()
    assert a["output"] == b["output"]
    assert "c_n" not in a
    assert a["model"] == b["model"]  # the same config, the same cached module
