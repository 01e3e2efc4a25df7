"""The oracle itself agrees with torch in float64, so comparing the service with it means
something (and a bug shared by the service and torch would still show against the formula)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from tests.oracle import forward, full_config, seeded_params, torch_module


def torch_forward(
    config: dict[str, Any],
    x: np.ndarray,
    h0: np.ndarray | None,
    c0: np.ndarray | None,
    lengths: list[int] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    module = torch_module(config).double()
    xt = torch.from_numpy(x)
    hx: Any = None
    if h0 is not None:
        hx = (
            (torch.from_numpy(h0), torch.from_numpy(c0)) if c0 is not None else torch.from_numpy(h0)
        )
    with torch.no_grad():
        if lengths is None:
            out, final = module(xt, hx)
        else:
            bf = config.get("batch_first", False)
            packed = torch.nn.utils.rnn.pack_padded_sequence(
                xt, torch.tensor(lengths), batch_first=bf, enforce_sorted=False
            )
            out_p, final = module(packed, hx)
            out, _ = torch.nn.utils.rnn.pad_packed_sequence(
                out_p, batch_first=bf, total_length=x.shape[1 if bf else 0]
            )
    if isinstance(final, tuple):
        return out.numpy(), final[0].numpy(), final[1].numpy()
    return out.numpy(), final.numpy(), None


SMALL = {"input_size": 3, "hidden_size": 4}


@pytest.mark.parametrize(
    ("config", "lengths"),
    [
        (SMALL, None),
        ({**SMALL, "num_layers": 3, "nonlinearity": "relu"}, None),
        ({**SMALL, "bidirectional": True, "num_layers": 2}, None),
        ({**SMALL, "bias": False, "batch_first": True}, [5, 2]),
        ({"input_size": 2, "hidden_size": 3, "bidirectional": True, "seed": 7}, [1, 5]),
        ({**SMALL, "mode": "LSTM"}, None),
        ({**SMALL, "mode": "LSTM", "num_layers": 2, "bidirectional": True}, [3, 5]),
        ({**SMALL, "mode": "LSTM", "proj_size": 2, "num_layers": 2}, None),
        ({**SMALL, "mode": "LSTM", "proj_size": 3, "bidirectional": True, "bias": False}, [5, 1]),
        ({**SMALL, "mode": "LSTM", "batch_first": True, "seed": 3}, [2, 4]),
        ({**SMALL, "mode": "GRU"}, None),
        ({**SMALL, "mode": "GRU", "num_layers": 3, "bias": False}, None),
        ({**SMALL, "mode": "GRU", "bidirectional": True, "num_layers": 2}, [5, 3]),
        ({**SMALL, "mode": "GRU", "batch_first": True, "seed": 11}, [1, 5]),
    ],
)
def test_oracle_matches_torch_float64(config: dict[str, Any], lengths: list[int] | None) -> None:
    c = full_config(config)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(
        (2, 5, c["input_size"]) if c["batch_first"] else (5, 2, c["input_size"])
    )
    rows = (2 if c["bidirectional"] else 1) * c["num_layers"]
    h0 = rng.standard_normal((rows, 2, c["proj_size"] or c["hidden_size"]))
    c0 = rng.standard_normal((rows, 2, c["hidden_size"])) if c["mode"] == "LSTM" else None
    want = torch_forward(config, x, h0, c0, lengths)
    got = forward(seeded_params(config), config, x, h0, c0, lengths)
    for g, w in zip(got, want, strict=True):
        if g is None or w is None:
            assert g is w is None
        else:
            assert g.shape == w.shape
            np.testing.assert_allclose(g, w, atol=1e-12)


@pytest.mark.parametrize("mode", ["RNN", "LSTM", "GRU"])
def test_oracle_unbatched_equals_batch_of_one(mode: str) -> None:
    config = {**SMALL, "num_layers": 2, "mode": mode}
    rng = np.random.default_rng(1)
    x, h0, c0 = rng.standard_normal((6, 3)), rng.standard_normal((2, 4)), None
    if mode == "LSTM":
        c0 = rng.standard_normal((2, 4))
    params = seeded_params(config)
    out, hn, cn = forward(params, config, x, h0, c0)
    out_b, hn_b, cn_b = forward(
        params, config, x[:, None], h0[:, None], None if c0 is None else c0[:, None]
    )
    assert out.shape == (6, 4)
    np.testing.assert_array_equal(out, out_b[:, 0])
    np.testing.assert_array_equal(hn, hn_b[:, 0])
    if mode == "LSTM":
        assert cn is not None
        assert cn_b is not None
        np.testing.assert_array_equal(cn, cn_b[:, 0])
    else:
        assert cn is None
