"""Checks a forward the way torch.nn.RNN / LSTM / GRU would, in torch's order, before it is queued.

A job that passes here cannot fail in torch for a reason of the caller's, so one bad request can
never fail a batch. Messages are torch's, with the field named. The state's shape rules
(`state_shape`) live here only: forwards and sessions both use them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from service.core.errors import InvalidInput, Loc
from service.core.schemas.config import RNNConfig
from service.engine.job import ForwardJob, Inputs
from service.engine.tensor import WireTensor

INPUT: Loc = ("body", "input")
H0: Loc = ("body", "h0")
C0: Loc = ("body", "c0")
LENGTHS: Loc = ("body", "lengths")


def _fmt(shape: Sequence[int]) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"


def state_shape(config: RNNConfig, part: int, batch: int | None) -> tuple[int, ...]:
    """The shape of state part `part` (0: h, 1: LSTM's c) for `batch` sequences, or unbatched
    (None). Never batch-first: (D*num_layers, N, size) or (D*num_layers, size)."""
    size = config.state_sizes[part]
    rows = config.state_rows
    return (rows, size) if batch is None else (rows, batch, size)


def state_parts(
    config: RNNConfig, h0: WireTensor | None, c0: WireTensor | None
) -> tuple[WireTensor, ...] | None:
    """The initial state as torch takes it: h0, or (h0, c0) for LSTM (both or neither)."""
    if not config.has_cell:
        if c0 is not None:
            raise InvalidInput.at(
                C0, f"c0 is the cell state of an LSTM; a {config.mode} model takes h0 only"
            )
        return None if h0 is None else (h0,)
    if (h0 is None) != (c0 is None):
        missing, loc = ("c0", C0) if c0 is None else ("h0", H0)
        raise InvalidInput.at(
            loc, f"an LSTM takes h0 and c0 together or neither; {missing} is missing"
        )
    return None if h0 is None or c0 is None else (h0, c0)


def _check_ranks(config: RNNConfig, parts: tuple[WireTensor, ...], ndim: int) -> None:
    kind = "batched 3-D" if ndim == 3 else "unbatched 2-D"
    if config.has_cell:
        if any(p.ndim != ndim for p in parts):
            loc = H0 if parts[0].ndim != ndim else C0
            got = ", ".join(f"{p.ndim}-D" for p in parts)
            raise InvalidInput.at(
                loc, f"For {kind} input, hx and cx should also be {ndim}-D but got ({got}) tensors"
            )
    elif parts[0].ndim != ndim:
        raise InvalidInput.at(
            H0, f"For {kind} input, hx should also be {ndim}-D but got {parts[0].ndim}-D tensor"
        )


def check_state_dtypes(config: RNNConfig, parts: tuple[WireTensor, ...]) -> None:
    for part, (t, loc) in enumerate(zip(parts, (H0, C0), strict=False)):
        if t.declared and t.dtype != config.dtype:
            raise InvalidInput.at(
                (*loc, "dtype"),
                f"{config.mode} {'hx' if part == 0 else 'cx'} dtype (torch.{t.dtype}) does not "
                f"match weight dtype (torch.{config.dtype})",
            )


def check_state_shapes(config: RNNConfig, parts: tuple[WireTensor, ...], batch: int | None) -> None:
    """The shapes of an initial state for `batch` sequences (None: unbatched)."""
    for part, (t, loc) in enumerate(zip(parts, (H0, C0), strict=False)):
        expected = state_shape(config, part, batch)
        if t.shape != expected:
            what = f"hidden[{part}] size" if config.has_cell else "hidden size"
            raise InvalidInput.at(loc, f"Expected {what} {_fmt(expected)}, got {list(t.shape)}")


def _first_bad_id(ids: np.ndarray[Any, Any], rows: int) -> tuple[tuple[int, ...], int] | None:
    """The position and value of the first id outside [0, rows), if any."""
    bad = (ids < 0) | (ids >= rows)
    if not bad.any():
        return None
    where = tuple(int(i) for i in np.argwhere(bad)[0])
    return where, int(ids[where])


def _validate_ids(config: RNNConfig, inputs: Inputs) -> ForwardJob:
    """Token ids for the embedding, (L, N), (N, L) with batch_first, or (L,): the input's rank,
    then the state's, the ids' range (torch's IndexError, with its place), the state's shapes."""
    assert config.embedding is not None
    x = inputs.input
    parts = state_parts(config, inputs.h0, inputs.c0)
    if x.ndim not in (1, 2):
        raise InvalidInput.at(
            INPUT,
            "token ids for the embedding are (L, N), (N, L) with batch_first, or (L,) "
            f"unbatched; got {x.ndim}-D",
        )
    batched = x.ndim == 2
    if parts is not None:
        _check_ranks(config, parts, x.ndim + 1)
        check_state_dtypes(config, parts)
    rows = config.embedding.num_embeddings
    bad = _first_bad_id(x.array, rows)
    if bad is not None:
        where, value = bad
        raise InvalidInput.at(
            (*INPUT, *where),
            f"index {value} is out of range for the embedding's {rows} rows (torch: IndexError: "
            "index out of range in self)",
        )
    if batched:
        seq_len, batch = (x.shape[1], x.shape[0]) if config.batch_first else x.shape
    else:
        seq_len, batch = x.shape[0], 1
    if parts is not None:
        check_state_shapes(config, parts, batch if batched else None)
    if seq_len == 0:
        raise InvalidInput.at(INPUT, "Expected sequence length to be larger than 0 in RNN")
    checked = _lengths(inputs.lengths, batched, batch, seq_len, 2)
    return ForwardJob(x, parts, checked, batched, seq_len, batch)


def _lengths(
    lengths: Sequence[int] | None, batched: bool, batch: int, seq_len: int, rank: int
) -> tuple[int, ...] | None:
    """Packed sequences' lengths, checked (torch would truncate floats and fail late on
    len > L); `rank`: a batched input's."""
    if lengths is None:
        return None
    if not batched:
        raise InvalidInput.at(
            LENGTHS,
            f"lengths is only allowed with batched ({rank}-D) input, got {rank - 1}-D input",
        )
    if len(lengths) != batch:
        raise InvalidInput.at(
            LENGTHS,
            f"expected {batch} lengths (one per sequence in the batch), got {len(lengths)}",
        )
    for i, n in enumerate(lengths):
        if not 1 <= n <= seq_len:
            raise InvalidInput.at((*LENGTHS, i), f"each length must be in [1, {seq_len}], got {n}")
    return tuple(lengths)


def validate_forward(config: RNNConfig, inputs: Inputs) -> ForwardJob:
    if config.ids:
        return _validate_ids(config, inputs)
    x = inputs.input
    parts = state_parts(config, inputs.h0, inputs.c0)
    # 1. rank
    if x.ndim not in (2, 3):
        tensor = " tensor" if config.mode == "RNN" else ""
        raise InvalidInput.at(
            INPUT,
            f"{config.mode}: Expected input to be 2D or 3D, got {x.ndim}D{tensor} instead",
        )
    batched = x.ndim == 3
    # 2. the state's rank matches the input's
    if parts is not None:
        _check_ranks(config, parts, x.ndim)
    # 3. dtypes
    if x.declared and x.dtype != config.dtype:
        raise InvalidInput.at(
            (*INPUT, "dtype"),
            f"RNN input dtype (torch.{x.dtype}) does not match weight dtype "
            f"(torch.{config.dtype}); send {config.dtype} (or nested lists, which take the "
            "model's dtype)",
        )
    if parts is not None:
        check_state_dtypes(config, parts)
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
    # 5. the state's shapes
    if parts is not None:
        check_state_shapes(config, parts, batch if batched else None)
    # 6. sequence length
    if seq_len == 0:
        raise InvalidInput.at(INPUT, "Expected sequence length to be larger than 0 in RNN")
    checked = _lengths(inputs.lengths, batched, batch, seq_len, 3)
    return ForwardJob(x, parts, checked, batched, seq_len, batch)
