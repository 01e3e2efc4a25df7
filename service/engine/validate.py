"""Checks a forward request the way torch.nn.RNN would, in torch's order, before it is queued.

A job that passes here cannot fail in torch for a reason of the caller's, so one bad request can
never fail a batch. Messages are torch's, with the field named.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from service.engine.codec import WireTensor
from service.errors import InvalidInput
from service.schemas.config import RNNConfig

INPUT = ("body", "input")
H0 = ("body", "h0")
LENGTHS = ("body", "lengths")


@dataclass(frozen=True)
class ForwardJob:
    """A validated forward: tensors in the model's dtype, shapes consistent with the config."""

    input: WireTensor
    h0: WireTensor | None
    lengths: tuple[int, ...] | None
    batched: bool
    seq_len: int
    batch: int  # 1 for unbatched input
    # Streaming sessions: the hidden state held by the server, on the serving device, used in
    # place of h0; and whether to hand the new state back (ForwardResult.state).
    state: torch.Tensor | None = None
    keep_state: bool = False


def _fmt(shape: Sequence[int]) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"


def validate_forward(
    config: RNNConfig,
    x: WireTensor,
    h0: WireTensor | None,
    lengths: Sequence[int] | None,
) -> ForwardJob:
    # 1. rank
    if x.ndim not in (2, 3):
        raise InvalidInput.at(
            INPUT, f"RNN: Expected input to be 2D or 3D, got {x.ndim}D tensor instead"
        )
    batched = x.ndim == 3
    # 2. h0 rank matches input's
    if h0 is not None and h0.ndim != x.ndim:
        kind = "batched 3-D" if batched else "unbatched 2-D"
        raise InvalidInput.at(
            H0,
            f"For {kind} input, hx should also be {x.ndim}-D but got {h0.ndim}-D tensor",
        )
    # 3. dtypes
    if x.declared and x.dtype != config.dtype:
        raise InvalidInput.at(
            (*INPUT, "dtype"),
            f"RNN input dtype (torch.{x.dtype}) does not match weight dtype "
            f"(torch.{config.dtype}); send {config.dtype} (or nested lists, which take the "
            "model's dtype)",
        )
    if h0 is not None and h0.declared and h0.dtype != config.dtype:
        raise InvalidInput.at(
            (*H0, "dtype"),
            f"RNN hx dtype (torch.{h0.dtype}) does not match weight dtype (torch.{config.dtype})",
        )
    # 4. features
    if x.shape[-1] != config.input_size:
        raise InvalidInput.at(
            INPUT,
            f"input.size(-1) must be equal to input_size. Expected {config.input_size}, "
            f"got {x.shape[-1]}",
        )
    if batched:
        seq_len, batch = (
            (x.shape[1], x.shape[0]) if config.batch_first else (x.shape[0], x.shape[1])
        )
    else:
        seq_len, batch = x.shape[0], 1
    # 5. h0 shape: (D*num_layers, N, H), never batch-first; (D*num_layers, H) unbatched.
    rows = config.num_directions * config.num_layers
    expected = (rows, batch, config.hidden_size) if batched else (rows, config.hidden_size)
    if h0 is not None and h0.shape != expected:
        raise InvalidInput.at(H0, f"Expected hidden size {_fmt(expected)}, got {list(h0.shape)}")
    # 6. sequence length
    if seq_len == 0:
        raise InvalidInput.at(INPUT, "Expected sequence length to be larger than 0 in RNN")
    # lengths: packed sequences; torch would truncate floats and fail late on len > L.
    checked: tuple[int, ...] | None = None
    if lengths is not None:
        if not batched:
            raise InvalidInput.at(
                LENGTHS, "lengths is only allowed with batched (3-D) input, got 2-D input"
            )
        if len(lengths) != batch:
            raise InvalidInput.at(
                LENGTHS,
                f"expected {batch} lengths (one per sequence in the batch), got {len(lengths)}",
            )
        for i, n in enumerate(lengths):
            if not 1 <= n <= seq_len:
                raise InvalidInput.at(
                    (*LENGTHS, i), f"each length must be in [1, {seq_len}], got {n}"
                )
        checked = tuple(lengths)
    return ForwardJob(x, h0, checked, batched, seq_len, batch)
