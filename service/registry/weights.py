"""Trained weights: safetensors in and out, checked against the config. No pickle, ever."""

from __future__ import annotations

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from service.errors import FieldError, InvalidInput
from service.registry.build import TORCH_DTYPES, construct, prepare_module
from service.schemas.config import GATES, RNNConfig

LOC = ("body",)


def expected_shapes(config: RNNConfig) -> dict[str, tuple[int, ...]]:
    """The module's state_dict names and shapes for `config`, in torch's order: gates x hidden
    rows (4 for LSTM, 3 for GRU), and weight_hr when an LSTM projects."""
    h, d, out = config.hidden_size, config.num_directions, config.h_size
    rows = GATES[config.mode] * h
    shapes: dict[str, tuple[int, ...]] = {}
    for k in range(config.num_layers):
        for sfx in ("", "_reverse")[:d]:
            shapes[f"weight_ih_l{k}{sfx}"] = (rows, config.input_size if k == 0 else d * out)
            shapes[f"weight_hh_l{k}{sfx}"] = (rows, out)
            if config.bias:
                shapes[f"bias_ih_l{k}{sfx}"] = (rows,)
                shapes[f"bias_hh_l{k}{sfx}"] = (rows,)
            if config.proj_size:
                shapes[f"weight_hr_l{k}{sfx}"] = (config.proj_size, h)
    return shapes


def accepted_dtypes(config: RNNConfig) -> tuple[torch.dtype, ...]:
    """The model's dtype, or float32 (what `state_dict()` of a freshly trained module holds)."""
    return tuple(dict.fromkeys((TORCH_DTYPES[config.dtype], torch.float32)))


def parse_weights(data: bytes, config: RNNConfig) -> dict[str, torch.Tensor]:
    """Decode a safetensors file and check every tensor; one 422 names every problem."""
    try:
        tensors = load_safetensors(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise InvalidInput.at(
            LOC, f"expected a safetensors file, could not read it: {exc}"
        ) from None
    expected = expected_shapes(config)
    accepted = accepted_dtypes(config)
    errors: list[FieldError] = []
    for name, shape in expected.items():
        if name not in tensors:
            errors.append(FieldError((*LOC, name), f"missing tensor; expected shape {list(shape)}"))
    for name, tensor in tensors.items():
        where = (*LOC, name)
        if name not in expected:
            errors.append(FieldError(where, f"unexpected tensor (shape {list(tensor.shape)})"))
            continue
        if tuple(tensor.shape) != expected[name]:
            errors.append(
                FieldError(
                    where, f"expected shape {list(expected[name])}, got {list(tensor.shape)}"
                )
            )
        if tensor.dtype not in accepted:
            names = " or ".join(str(d).removeprefix("torch.") for d in accepted)
            errors.append(FieldError(where, f"expected dtype {names}, got {str(tensor.dtype)[6:]}"))
        elif not torch.isfinite(tensor).all():
            errors.append(FieldError(where, "expected finite values, got NaN or infinity"))
    if errors:
        detail = "the weights do not fit the model's config: " + "; ".join(
            f"{e.loc[-1]}: {e.msg}" for e in errors
        )
        raise InvalidInput(detail, errors)
    return tensors


def module_from_weights(
    config: RNNConfig, tensors: dict[str, torch.Tensor], device: torch.device
) -> nn.RNNBase:
    """A module holding exactly `tensors` (checked by parse_weights), cast and moved."""
    rnn = construct(config, device="meta")  # no random init: every parameter is assigned below
    rnn.load_state_dict({k: v.to(torch.float32) for k, v in tensors.items()}, assign=True)
    return prepare_module(rnn, config, device)


def weights_bytes(module: nn.Module) -> bytes:
    """A module's state_dict as a safetensors file."""
    return save_safetensors(
        {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    )
