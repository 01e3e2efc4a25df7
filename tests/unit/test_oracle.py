"""The oracle itself agrees with torch in float64, so comparing the service with it means
something (and a bug shared by the service and torch would still show against the formula)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.oracle import rnn_forward, seeded_params


def torch_forward(config: dict, x: np.ndarray, h0: np.ndarray | None, lengths: list[int] | None):
    torch.manual_seed(config.get("seed", 0))
    rnn = torch.nn.RNN(**{k: v for k, v in config.items() if k not in ("dtype", "seed")}).double()
    xt = torch.from_numpy(x)
    ht = None if h0 is None else torch.from_numpy(h0)
    with torch.no_grad():
        if lengths is None:
            out, hn = rnn(xt, ht)
        else:
            bf = config.get("batch_first", False)
            packed = torch.nn.utils.rnn.pack_padded_sequence(
                xt, torch.tensor(lengths), batch_first=bf, enforce_sorted=False
            )
            out_p, hn = rnn(packed, ht)
            out, _ = torch.nn.utils.rnn.pad_packed_sequence(
                out_p, batch_first=bf, total_length=x.shape[1 if bf else 0]
            )
    return out.numpy(), hn.numpy()


@pytest.mark.parametrize(
    ("config", "lengths"),
    [
        ({"input_size": 3, "hidden_size": 4}, None),
        ({"input_size": 3, "hidden_size": 4, "num_layers": 3, "nonlinearity": "relu"}, None),
        ({"input_size": 3, "hidden_size": 4, "bidirectional": True, "num_layers": 2}, None),
        ({"input_size": 3, "hidden_size": 4, "bias": False, "batch_first": True}, [5, 2]),
        ({"input_size": 2, "hidden_size": 3, "bidirectional": True, "seed": 7}, [1, 5]),
    ],
)
def test_oracle_matches_torch_float64(config: dict, lengths: list[int] | None) -> None:
    rng = np.random.default_rng(0)
    batch_first = config.get("batch_first", False)
    x = rng.standard_normal(
        (2, 5, config["input_size"]) if batch_first else (5, 2, config["input_size"])
    )
    d = 2 if config.get("bidirectional") else 1
    h0 = rng.standard_normal((d * config.get("num_layers", 1), 2, config["hidden_size"]))
    want_out, want_hn = torch_forward(config, x, h0, lengths)
    got_out, got_hn = rnn_forward(seeded_params(config), config, x, h0, lengths)
    np.testing.assert_allclose(got_out, want_out, atol=1e-12)
    np.testing.assert_allclose(got_hn, want_hn, atol=1e-12)


def test_oracle_unbatched_equals_batch_of_one() -> None:
    config = {"input_size": 3, "hidden_size": 4, "num_layers": 2}
    rng = np.random.default_rng(1)
    x, h0 = rng.standard_normal((6, 3)), rng.standard_normal((2, 4))
    params = seeded_params(config)
    out, hn = rnn_forward(params, config, x, h0)
    out_b, hn_b = rnn_forward(params, config, x[:, None], h0[:, None])
    assert out.shape == (6, 4)
    np.testing.assert_array_equal(out, out_b[:, 0])
    np.testing.assert_array_equal(hn, hn_b[:, 0])
