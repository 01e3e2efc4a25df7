"""An independent float64 NumPy implementation of torch.nn.RNN's recurrence: the test oracle.

It shares nothing with the service but the weights' names (torch's state_dict layout). Seeded
weights come from `torch.manual_seed(seed); nn.RNN(...)`, which is the contract's definition of a
seeded model; everything the recurrence does with them is computed here, in float64.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

Params = dict[str, np.ndarray]

DEFAULTS: dict[str, Any] = {
    "num_layers": 1,
    "nonlinearity": "tanh",
    "bias": True,
    "batch_first": False,
    "dropout": 0.0,
    "bidirectional": False,
    "dtype": "float32",
    "seed": 0,
}


def full_config(config: dict[str, Any]) -> dict[str, Any]:
    return {**DEFAULTS, **config}


def seeded_params(config: dict[str, Any]) -> Params:
    """The contract's seeded weights, as float64 arrays (rounded through the model's dtype)."""
    c = full_config(config)
    torch.manual_seed(c["seed"])
    rnn = torch.nn.RNN(
        c["input_size"], c["hidden_size"], c["num_layers"], nonlinearity=c["nonlinearity"],
        bias=c["bias"], batch_first=c["batch_first"], bidirectional=c["bidirectional"],
    )  # fmt: skip
    dtype = getattr(torch, c["dtype"])
    return {k: v.to(dtype).double().numpy() for k, v in rnn.state_dict().items()}


def rnn_forward(
    params: Params,
    config: dict[str, Any],
    x: np.ndarray,
    h0: np.ndarray | None = None,
    lengths: list[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """output, h_n for input `x` as torch.nn.RNN(**config) would compute them, in float64."""
    c = full_config(config)
    hidden, layers = c["hidden_size"], c["num_layers"]
    dirs = 2 if c["bidirectional"] else 1
    act = np.tanh if c["nonlinearity"] == "tanh" else (lambda v: np.maximum(v, 0.0))
    x = np.asarray(x, dtype=np.float64)
    unbatched = x.ndim == 2
    if unbatched:
        x = x[:, None, :]
        h0 = None if h0 is None else np.asarray(h0, dtype=np.float64)[:, None, :]
    elif c["batch_first"]:
        x = x.transpose(1, 0, 2)  # h0 is never batch-first
    seq_len, batch, _ = x.shape
    h0 = np.zeros((dirs * layers, batch, hidden)) if h0 is None else np.asarray(h0, np.float64)
    lens = [seq_len] * batch if lengths is None else list(lengths)

    h_n = np.zeros((dirs * layers, batch, hidden))
    layer_input = x
    for k in range(layers):
        halves = []
        for d in range(dirs):
            sfx = "_reverse" if d else ""
            w_ih, w_hh = params[f"weight_ih_l{k}{sfx}"], params[f"weight_hh_l{k}{sfx}"]
            b = (
                params[f"bias_ih_l{k}{sfx}"] + params[f"bias_hh_l{k}{sfx}"]
                if c["bias"]
                else np.zeros(hidden)
            )
            out = np.zeros((seq_len, batch, hidden))  # past a sequence's length: padding, 0
            for n in range(batch):
                h = h0[k * dirs + d, n]
                steps = range(lens[n]) if d == 0 else range(lens[n] - 1, -1, -1)
                for t in steps:
                    h = act(w_ih @ layer_input[t, n] + w_hh @ h + b)
                    out[t, n] = h
                h_n[k * dirs + d, n] = h
            halves.append(out)
        layer_input = np.concatenate(halves, axis=-1)
    output = layer_input
    if unbatched:
        return output[:, 0, :], h_n[:, 0, :]
    if c["batch_first"]:
        output = output.transpose(1, 0, 2)
    return output, h_n
