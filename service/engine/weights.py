"""Trained weights into modules and back: safetensors, checked first by the catalog
(`service.catalog.weights`). No pickle, ever."""

from __future__ import annotations

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from service.catalog.weights import check_weights
from service.core.schemas.config import RNNConfig
from service.engine.build import Model, build_seeded, construct, prepare_module


def parse_weights(data: bytes, config: RNNConfig) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file that fits the config (else one 422 naming every
    problem)."""
    check_weights(data, config)
    return load_safetensors(data)


def module_from_weights(
    config: RNNConfig, tensors: dict[str, torch.Tensor], device: torch.device
) -> Model:
    """A module holding exactly `tensors` (checked by parse_weights), cast and moved."""
    model = construct(config, device="meta")  # no random init: every parameter is assigned below
    model.load_state_dict({k: v.to(torch.float32) for k, v in tensors.items()}, assign=True)
    return prepare_module(model, config, device)


def weights_bytes(module: nn.Module) -> bytes:
    """A module's state_dict as a safetensors file."""
    return save_safetensors(
        {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    )


def seeded_weights(config: RNNConfig) -> bytes:
    """The weights `torch.manual_seed(config.seed); nn.<mode>(...)` draws, as a safetensors file
    (what a model registered without trained weights holds)."""
    return weights_bytes(build_seeded(config, torch.device("cpu")))
