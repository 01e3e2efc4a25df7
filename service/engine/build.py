"""Building torch.nn.RNN / LSTM / GRU modules exactly as a client would locally; with an
embedding in front or a head behind, the ordinary `nn.Module` that holds them (`Stack`)."""

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


class Stack(nn.Module):
    """An embedding (optional), the recurrent core and a head (optional), as a user's module
    defines them: `embedding`, `rnn`, `head` (an nn.Linear; the activation is the config's).
    The runner calls the parts itself (packing and states are the core's), so this has no
    forward of its own."""

    def __init__(
        self, embedding: nn.Embedding | None, rnn: nn.RNNBase, head: nn.Linear | None
    ) -> None:
        super().__init__()
        self.embedding, self.rnn, self.head = embedding, rnn, head


Model = nn.RNNBase | Stack


def core_of(module: nn.Module) -> nn.RNNBase:
    """The recurrent core of a built model."""
    core = module.rnn if isinstance(module, Stack) else module
    assert isinstance(core, nn.RNNBase)
    return core


def build_seeded(config: RNNConfig, device: torch.device) -> Model:
    """`torch.manual_seed(seed); nn.<mode>(...)` on the CPU in float32, then cast and moved;
    with layers around the core, drawn in the order embedding, core, head (a module whose
    `__init__` makes them in that order draws the same).

    The global RNG state is restored afterwards, so serving never perturbs anyone's randomness.
    """
    with _RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        rnn = construct(config)
    return prepare_module(rnn, config, device)


def construct(config: RNNConfig, device: str = "cpu") -> Model:
    """`nn.RNN(...)`, `nn.LSTM(...)` or `nn.GRU(...)` for the config, float32 (device "meta":
    shapes only, no initialisation); in a `Stack` with its embedding and head if it has them."""
    if config.embedding is None and config.head is None:
        return construct_core(config, device)
    embedding = None
    if config.embedding is not None:
        emb = config.embedding
        embedding = nn.Embedding(
            emb.num_embeddings, config.input_size, padding_idx=emb.padding_idx, device=device
        )
    rnn = construct_core(config, device)
    head = None
    if config.head is not None:
        head = nn.Linear(
            config.output_size, config.head.out_features, bias=config.head.bias, device=device
        )
    return Stack(embedding, rnn, head)


def construct_core(config: RNNConfig, device: str = "cpu") -> nn.RNNBase:
    """The recurrent core alone."""
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


def prepare_module(model: Model, config: RNNConfig, device: torch.device) -> Model:
    """Cast, move, freeze and (on CUDA) compact the weights into cuDNN's single buffer."""
    model = model.to(device=device, dtype=TORCH_DTYPES[config.dtype])
    model.eval()
    model.requires_grad_(False)
    if device.type == "cuda":
        # Without this cuDNN warns and re-compacts the weights on every call.
        core_of(model).flatten_parameters()
    return model
