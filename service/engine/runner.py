"""The torch side: runs a validated job on a module. Called only from the engine's worker thread."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from service.engine.codec import WireTensor
from service.engine.validate import ForwardJob
from service.registry.build import TORCH_DTYPES
from service.schemas.config import RNNConfig


@dataclass(frozen=True)
class ForwardResult:
    """Arrays in the model's dtype (bfloat16 as uint16 bit patterns), on the host."""

    output: np.ndarray[Any, Any]
    h_n: np.ndarray[Any, Any]
    state: torch.Tensor | None = None  # h_n on the device, for jobs with keep_state
    batch_sequences: int = 0  # sequences in the forward this job ran in (for logs)


def to_torch(t: WireTensor, device: torch.device) -> torch.Tensor:
    return array_to_torch(t.array, t.dtype == "bfloat16", device)


def array_to_torch(arr: np.ndarray[Any, Any], bf16: bool, device: torch.device) -> torch.Tensor:
    """Host array -> device tensor in one copy; bfloat16 arrives as uint16 bit patterns."""
    if not arr.flags.writeable:
        arr = arr.copy()
    tensor = torch.from_numpy(arr)
    if bf16:
        tensor = tensor.view(torch.int16).view(torch.bfloat16)
    return tensor.to(device, non_blocking=True)


def to_numpy(t: torch.Tensor) -> np.ndarray[Any, Any]:
    t = t.detach().to("cpu").contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.numpy()


def run_forward(module: nn.RNN, config: RNNConfig, job: ForwardJob) -> ForwardResult:
    device = next(module.parameters()).device
    dtype = TORCH_DTYPES[config.dtype]
    x = to_torch(job.input, device)
    h0 = job.state if job.state is not None else None
    if h0 is None and job.h0 is not None:
        h0 = to_torch(job.h0, device).contiguous()
    with torch.inference_mode():
        if job.lengths is None:
            out, h_n = module(x, h0)
        elif job.batch == 0:
            out = torch.zeros(*_output_shape(config, job), dtype=dtype, device=device)
            h_n = torch.zeros(
                config.num_directions * config.num_layers, 0, config.hidden_size, dtype=dtype
            )
        else:
            lengths = torch.tensor(job.lengths, dtype=torch.int64)  # must live on the CPU
            packed = pack_padded_sequence(
                x, lengths, batch_first=config.batch_first, enforce_sorted=False
            )
            packed_out, h_n = module(packed, h0)
            out, _ = pad_packed_sequence(
                packed_out, batch_first=config.batch_first, total_length=job.seq_len
            )
    state = h_n.clone() if job.keep_state else None
    return ForwardResult(to_numpy(out), to_numpy(h_n), state, job.batch)


def _output_shape(config: RNNConfig, job: ForwardJob) -> tuple[int, ...]:
    features = config.num_directions * config.hidden_size
    if config.batch_first:
        return (job.batch, job.seq_len, features)
    return (job.seq_len, job.batch, features)


def run_batch(module: nn.RNN, config: RNNConfig, jobs: Sequence[ForwardJob]) -> list[ForwardResult]:
    """Run several validated jobs of one model as one forward; each gets what it would alone.

    Requests are joined on the batch axis of a sequence-major buffer (h0 on dim 1, whatever
    batch_first says; an unbatched request is one sequence). Requests of different lengths, or
    with `lengths`, run as packed sequences, so no sequence ever runs over another's padding.
    """
    if len(jobs) == 1:
        return [run_forward(module, config, jobs[0])]
    device = next(module.parameters()).device
    bf16 = config.dtype == "bfloat16"
    carrier = jobs[0].input.array.dtype
    seq_len = max(j.seq_len for j in jobs)
    total = sum(j.batch for j in jobs)
    rows, hidden = config.num_directions * config.num_layers, config.hidden_size

    x = np.zeros((seq_len, total, config.input_size), dtype=carrier)
    with_h0 = any(j.h0 is not None or j.state is not None for j in jobs)
    h0 = np.zeros((rows, total, hidden), dtype=carrier) if with_h0 else None
    lengths: list[int] = []
    start = 0
    for j in jobs:
        stop = start + j.batch
        x[: j.seq_len, start:stop] = _seq_major(j.input.array, j.batched, config.batch_first)
        if h0 is not None and j.h0 is not None:
            h0[:, start:stop] = j.h0.array if j.batched else j.h0.array[:, None]
        lengths += list(j.lengths) if j.lengths else [j.seq_len] * j.batch
        start = stop

    xt = array_to_torch(x, bf16, device)
    ht = None if h0 is None else array_to_torch(h0, bf16, device)
    if ht is not None:  # sessions' states are already on the device: placed there directly
        start = 0
        for j in jobs:
            if j.state is not None:
                ht[:, start : start + j.batch] = j.state if j.batched else j.state[:, None]
            start += j.batch
    with torch.inference_mode():
        if all(n == seq_len for n in lengths):
            # batch_first modules take (N, L, F); a transposed view of the buffer costs nothing.
            out, h_n = module(xt.transpose(0, 1) if config.batch_first else xt, ht)
            if config.batch_first:
                out = out.transpose(0, 1)
        else:
            packed = pack_padded_sequence(
                xt, torch.tensor(lengths, dtype=torch.int64), enforce_sorted=False
            )
            packed_out, h_n = module(packed, ht)
            out, _ = pad_packed_sequence(packed_out, total_length=seq_len)
    out_np, hn_np = to_numpy(out), to_numpy(h_n)

    results = []
    start = 0
    for j in jobs:
        stop = start + j.batch
        o, h = out_np[: j.seq_len, start:stop], hn_np[:, start:stop]
        state = h_n[:, start:stop].clone() if j.keep_state else None
        if not j.batched:
            o, h = o[:, 0], h[:, 0]
            state = None if state is None else state[:, 0]
        elif config.batch_first:
            o = o.transpose(1, 0, 2)
        results.append(
            ForwardResult(np.ascontiguousarray(o), np.ascontiguousarray(h), state, total)
        )
        start = stop
    return results


def _seq_major(arr: np.ndarray[Any, Any], batched: bool, batch_first: bool) -> np.ndarray[Any, Any]:
    if not batched:
        return arr[:, None, :]
    return arr.transpose(1, 0, 2) if batch_first else arr
