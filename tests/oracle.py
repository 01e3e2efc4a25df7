"""An independent float64 NumPy implementation of the recurrences of torch.nn.RNN, nn.LSTM (with
projections) and nn.GRU: the test oracle.

It shares nothing with the service but the weights' names (torch's state_dict layout, gates in
torch's order: i, f, g, o for LSTM; r, z, n for GRU). Seeded weights come from
`torch.manual_seed(seed); nn.<mode>(...)`, which is the contract's definition of a seeded model;
everything the recurrence does with them is computed here, in float64.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

Params = dict[str, np.ndarray]

DEFAULTS: dict[str, Any] = {
    "mode": "RNN",
    "num_layers": 1,
    "nonlinearity": "tanh",
    "bias": True,
    "batch_first": False,
    "dropout": 0.0,
    "bidirectional": False,
    "proj_size": 0,
    "dtype": "float32",
    "seed": 0,
}


def full_config(config: dict[str, Any]) -> dict[str, Any]:
    return {**DEFAULTS, **config}


def torch_module(config: dict[str, Any]) -> torch.nn.RNNBase:
    """`torch.manual_seed(seed); nn.<mode>(...)` in float32, as the contract defines it."""
    c = full_config(config)
    torch.manual_seed(c["seed"])
    common = {
        "num_layers": c["num_layers"],
        "bias": c["bias"],
        "batch_first": c["batch_first"],
        "bidirectional": c["bidirectional"],
    }
    if c["mode"] == "LSTM":
        return torch.nn.LSTM(c["input_size"], c["hidden_size"], proj_size=c["proj_size"], **common)
    if c["mode"] == "GRU":
        return torch.nn.GRU(c["input_size"], c["hidden_size"], **common)
    return torch.nn.RNN(c["input_size"], c["hidden_size"], nonlinearity=c["nonlinearity"], **common)


def seeded_params(config: dict[str, Any]) -> Params:
    """The contract's seeded weights, as float64 arrays (rounded through the model's dtype)."""
    dtype = getattr(torch, full_config(config)["dtype"])
    return {k: v.to(dtype).double().numpy() for k, v in torch_module(config).state_dict().items()}


def _sigmoid(v: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-v))
    return out


def _cell(
    c: dict[str, Any], p: Params, sfx: str, x: np.ndarray, h: np.ndarray, cell: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One step of one layer and direction: (h', c') from input x, state h and (LSTM) cell."""
    hidden = c["hidden_size"]
    gi = p[f"weight_ih{sfx}"] @ x
    gh = p[f"weight_hh{sfx}"] @ h
    if c["bias"]:
        gi = gi + p[f"bias_ih{sfx}"]
        gh = gh + p[f"bias_hh{sfx}"]
    if c["mode"] == "RNN":
        pre = gi + gh
        return (np.tanh(pre) if c["nonlinearity"] == "tanh" else np.maximum(pre, 0.0)), cell
    if c["mode"] == "GRU":
        r = _sigmoid(gi[:hidden] + gh[:hidden])
        z = _sigmoid(gi[hidden : 2 * hidden] + gh[hidden : 2 * hidden])
        n = np.tanh(gi[2 * hidden :] + r * gh[2 * hidden :])
        return (1.0 - z) * n + z * h, cell
    g = gi + gh  # LSTM: input, forget, cell and output gates
    i, f = _sigmoid(g[:hidden]), _sigmoid(g[hidden : 2 * hidden])
    cand, o = np.tanh(g[2 * hidden : 3 * hidden]), _sigmoid(g[3 * hidden :])
    cell = f * cell + i * cand
    h_new = o * np.tanh(cell)
    if c["proj_size"]:
        h_new = p[f"weight_hr{sfx}"] @ h_new
    return h_new, cell


def forward(
    params: Params,
    config: dict[str, Any],
    x: np.ndarray,
    h0: np.ndarray | None = None,
    c0: np.ndarray | None = None,
    lengths: list[int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """output, h_n and (LSTM) c_n for input `x`, as torch would compute them, in float64."""
    c = full_config(config)
    hidden, layers, lstm = c["hidden_size"], c["num_layers"], c["mode"] == "LSTM"
    h_size = c["proj_size"] or hidden
    dirs = 2 if c["bidirectional"] else 1
    x = np.asarray(x, dtype=np.float64)
    unbatched = x.ndim == 2
    if unbatched:
        x = x[:, None, :]
        h0 = None if h0 is None else np.asarray(h0, dtype=np.float64)[:, None, :]
        c0 = None if c0 is None else np.asarray(c0, dtype=np.float64)[:, None, :]
    elif c["batch_first"]:
        x = x.transpose(1, 0, 2)  # the states are never batch-first
    seq_len, batch, _ = x.shape
    h0 = np.zeros((dirs * layers, batch, h_size)) if h0 is None else np.asarray(h0, np.float64)
    c0 = np.zeros((dirs * layers, batch, hidden)) if c0 is None else np.asarray(c0, np.float64)
    lens = [seq_len] * batch if lengths is None else list(lengths)

    h_n = np.zeros((dirs * layers, batch, h_size))
    c_n = np.zeros((dirs * layers, batch, hidden))
    layer_input = x
    for k in range(layers):
        halves = []
        for d in range(dirs):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            row = k * dirs + d
            out = np.zeros((seq_len, batch, h_size))  # past a sequence's length: padding, 0
            for n in range(batch):
                h, cell = h0[row, n], c0[row, n]
                steps = range(lens[n]) if d == 0 else range(lens[n] - 1, -1, -1)
                for t in steps:
                    h, cell = _cell(c, params, sfx, layer_input[t, n], h, cell)
                    out[t, n] = h
                h_n[row, n], c_n[row, n] = h, cell
            halves.append(out)
        layer_input = np.concatenate(halves, axis=-1)
    output = layer_input
    if unbatched:
        output, h_n, c_n = output[:, 0, :], h_n[:, 0, :], c_n[:, 0, :]
    elif c["batch_first"]:
        output = output.transpose(1, 0, 2)
    return output, h_n, (c_n if lstm else None)


def rnn_forward(
    params: Params,
    config: dict[str, Any],
    x: np.ndarray,
    h0: np.ndarray | None = None,
    lengths: list[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """output, h_n of an RNN or GRU (no cell state)."""
    output, h_n, _ = forward(params, config, x, h0, None, lengths)
    return output, h_n


def lstm_forward(
    params: Params,
    config: dict[str, Any],
    x: np.ndarray,
    h0: np.ndarray | None = None,
    c0: np.ndarray | None = None,
    lengths: list[int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """output, h_n, c_n of an LSTM."""
    output, h_n, c_n = forward(params, config, x, h0, c0, lengths)
    assert c_n is not None, "not an LSTM config"
    return output, h_n, c_n


# --- the layers around the core: an embedding in front, a linear head and its activation behind.
# Their names are the stored model's: `embedding.weight`, the core's under `rnn.`, `head.weight`
# and `head.bias`; every operation is computed here in float64.


def torch_model(config: dict[str, Any]) -> torch.nn.Module:
    """The contract's seeded model with layers: `torch.manual_seed(seed)`, then nn.Embedding,
    the core and nn.Linear, drawn in that order, as an ordinary module's `__init__` makes them."""
    c = full_config(config)
    torch.manual_seed(c["seed"])
    model = torch.nn.Module()
    emb = c.get("embedding")
    if emb is not None:
        model.embedding = torch.nn.Embedding(
            emb["num_embeddings"], c["input_size"], padding_idx=emb.get("padding_idx")
        )
    model.rnn = _core_after_seed(c)  # from the same stream, next
    head = c.get("head")
    if head is not None:
        dirs = 2 if c["bidirectional"] else 1
        width = dirs * (c["proj_size"] or c["hidden_size"])
        model.head = torch.nn.Linear(width, head["out_features"], bias=head.get("bias", True))
    return model


def _core_after_seed(c: dict[str, Any]) -> torch.nn.RNNBase:
    common = {"num_layers": c["num_layers"], "bias": c["bias"], "batch_first": c["batch_first"],
              "bidirectional": c["bidirectional"]}  # fmt: skip
    if c["mode"] == "LSTM":
        return torch.nn.LSTM(c["input_size"], c["hidden_size"], proj_size=c["proj_size"], **common)
    if c["mode"] == "GRU":
        return torch.nn.GRU(c["input_size"], c["hidden_size"], **common)
    return torch.nn.RNN(c["input_size"], c["hidden_size"], nonlinearity=c["nonlinearity"], **common)


def seeded_model_params(config: dict[str, Any]) -> Params:
    """The seeded weights of a model with layers, by their stored names, as float64 arrays
    (rounded through the model's dtype)."""
    dtype = getattr(torch, full_config(config)["dtype"])
    state = torch_model(config).state_dict()
    return {k: v.to(dtype).double().numpy() for k, v in state.items()}


def _activation(name: str, y: np.ndarray) -> np.ndarray:
    if name == "none":
        return y
    if name == "sigmoid":
        return _sigmoid(y)
    if name == "tanh":
        tanh: np.ndarray = np.tanh(y)
        return tanh
    shifted = y - y.max(axis=-1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    out: np.ndarray = np.exp(shifted - log_z) if name == "softmax" else shifted - log_z
    return out


def model_forward(
    params: Params,
    config: dict[str, Any],
    x: np.ndarray,
    h0: np.ndarray | None = None,
    c0: np.ndarray | None = None,
    lengths: list[int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """output, h_n, c_n (LSTM) and the head's output (a head) of a model with layers: the
    embedding's rows for token ids, the recurrence (`forward`), the head on every step's output
    or on each sequence's last valid step, then its activation."""
    c = full_config(config)
    core_params = {k.removeprefix("rnn."): v for k, v in params.items() if k.startswith("rnn.")}
    if c.get("embedding") is not None:
        x = params["embedding.weight"][np.asarray(x, dtype=np.int64)]
    core = {k: v for k, v in c.items() if k not in ("embedding", "head")}
    output, h_n, c_n = forward(core_params or params, core, x, h0, c0, lengths)
    head = c.get("head")
    if head is None:
        return output, h_n, c_n, None
    if head.get("on", "every_step") == "last_step":
        if output.ndim == 2:
            picked = output[-1]
        else:
            seq_major = output.transpose(1, 0, 2) if c["batch_first"] else output
            n = seq_major.shape[1]
            last = [seq_major.shape[0] - 1] * n if lengths is None else [k - 1 for k in lengths]
            picked = np.stack([seq_major[last[i], i] for i in range(n)]) if n else seq_major[0]
    else:
        picked = output
    y = picked @ params["head.weight"].T
    if head.get("bias", True):
        y = y + params["head.bias"]
    y = _activation(head.get("activation", "none"), y)
    if head.get("on", "every_step") == "every_step" and lengths is not None:
        for i, n in enumerate(lengths):  # past a sequence's length there is no step: 0
            if c["batch_first"]:
                y[i, n:] = 0.0
            else:
                y[n:, i] = 0.0
    return output, h_n, c_n, y
