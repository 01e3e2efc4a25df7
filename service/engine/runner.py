"""The torch side: runs a validated job on a module. Called only from the engine's worker thread."""

from __future__ import annotations

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


def to_torch(t: WireTensor, device: torch.device) -> torch.Tensor:
    arr = t.array if t.array.flags.writeable else t.array.copy()
    tensor = torch.from_numpy(arr)
    if t.dtype == "bfloat16":
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
    h0 = to_torch(job.h0, device).contiguous() if job.h0 is not None else None
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
    return ForwardResult(to_numpy(out), to_numpy(h_n))


def _output_shape(config: RNNConfig, job: ForwardJob) -> tuple[int, ...]:
    features = config.num_directions * config.hidden_size
    if config.batch_first:
        return (job.batch, job.seq_len, features)
    return (job.seq_len, job.batch, features)
