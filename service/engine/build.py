"""Building torch.nn.RNN / LSTM / GRU modules exactly as a client would locally."""

from __future__ import annotations

import threading

import torch
from torch import nn

from service.core.schemas.config import DType, RNNConfig

TORCH_DTYPES: dict[DType, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}

# torch's default RNG is process-wide: seeding and drawing must not interleave across threads.
_RNG_LOCK = threading.Lock()


def build_seeded(config: RNNConfig, device: torch.device) -> nn.RNNBase:
    """`torch.manual_seed(seed); nn.<mode>(...)` on the CPU in float32, then cast and moved.

    The global RNG state is restored afterwards, so serving never perturbs anyone's randomness.
    """
    with _RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        rnn = construct(config)
    return prepare_module(rnn, config, device)


def construct(config: RNNConfig, device: str = "cpu") -> nn.RNNBase:
    """`nn.RNN(...)`, `nn.LSTM(...)` or `nn.GRU(...)` for the config, float32 (device "meta":
    shapes only, no initialisation)."""
    common = {
        "num_layers": config.num_layers,
        "bias": config.bias,
        "batch_first": config.batch_first,
        # Dropout draws nothing at construction and is inert in eval mode; passing it with
        # num_layers=1 only makes torch warn, so it is set after construction instead.
        "dropout": 0.0,
        "bidirectional": config.bidirectional,
        "device": device,
    }
    rnn: nn.RNNBase
    if config.mode == "LSTM":
        rnn = nn.LSTM(config.input_size, config.hidden_size, proj_size=config.proj_size, **common)
    elif config.mode == "GRU":
        rnn = nn.GRU(config.input_size, config.hidden_size, **common)
    else:
        rnn = nn.RNN(
            config.input_size, config.hidden_size, nonlinearity=config.nonlinearity, **common
        )
    rnn.dropout = config.dropout
    return rnn


def prepare_module(rnn: nn.RNNBase, config: RNNConfig, device: torch.device) -> nn.RNNBase:
    """Cast, move, freeze and (on CUDA) compact the weights into cuDNN's single buffer."""
    rnn = rnn.to(device=device, dtype=TORCH_DTYPES[config.dtype])
    rnn.eval()
    rnn.requires_grad_(False)
    if device.type == "cuda":
        # Without this cuDNN warns and re-compacts the weights on every call.
        rnn.flatten_parameters()
    return rnn
