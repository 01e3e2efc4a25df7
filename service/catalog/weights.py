"""Trained weights, checked against their config without torch: a safetensors file (never a
pickle) whose tensors are exactly the module's state_dict names, shapes and an accepted dtype,
with finite values. The engine builds modules only from files that pass (`service.engine.weights`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from safetensors import SafetensorError, deserialize

from service.core.errors import FieldError, InvalidInput
from service.core.schemas.config import GATES, RNNConfig

LOC = ("body",)

# safetensors' dtype codes, by the names torch gives them (as error messages say them)
_NAMES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}  # fmt: skip
# the raw values of each float dtype (bfloat16: its bit patterns)
_CARRIERS = {"float64": "<f8", "float32": "<f4", "float16": "<f2", "bfloat16": "<u2"}


#: the stored names' prefixes of a model with layers around its core (a core alone has none)
EMBEDDING, CORE, HEAD = "embedding.", "rnn.", "head."


def layered(config: RNNConfig) -> bool:
    """Whether the model is more than its recurrent core (its names then have prefixes)."""
    return config.embedding is not None or config.head is not None


def expected_shapes(config: RNNConfig) -> dict[str, tuple[int, ...]]:
    """The model's state_dict names and shapes for `config`. A core alone: nn.RNN's own names,
    in torch's order: gates x hidden rows (4 for LSTM, 3 for GRU), and weight_hr when an LSTM
    projects. With an embedding or a head: `embedding.weight`, the core's names under `rnn.`,
    then `head.weight` and `head.bias`."""
    core = core_shapes(config)
    if not layered(config):
        return core
    shapes: dict[str, tuple[int, ...]] = {}
    if config.embedding is not None:
        shapes[EMBEDDING + "weight"] = (config.embedding.num_embeddings, config.input_size)
    shapes.update((CORE + name, shape) for name, shape in core.items())
    if config.head is not None:
        shapes[HEAD + "weight"] = (config.head.out_features, config.output_size)
        if config.head.bias:
            shapes[HEAD + "bias"] = (config.head.out_features,)
    return shapes


def core_shapes(config: RNNConfig) -> dict[str, tuple[int, ...]]:
    """The recurrent core's state_dict names and shapes."""
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


def accepted_dtypes(config: RNNConfig) -> tuple[str, ...]:
    """The model's dtype, or float32 (what `state_dict()` of a freshly trained module holds)."""
    return tuple(dict.fromkeys((config.dtype, "float32")))


def _finite(raw: Any, dtype: str) -> bool:
    values = np.frombuffer(raw, dtype=_CARRIERS[dtype])
    if dtype == "bfloat16":  # an exponent of all ones is an infinity or a NaN
        return not bool(((values & 0x7F80) == 0x7F80).any())
    return bool(np.isfinite(values).all())


def check_weights(data: bytes, config: RNNConfig) -> None:
    """Check a safetensors file against the config; one 422 names every problem."""
    try:
        tensors = deserialize(data)  # type: ignore[no-untyped-call]
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise InvalidInput.at(
            LOC, f"expected a safetensors file, could not read it: {exc}"
        ) from None
    expected = expected_shapes(config)
    accepted = accepted_dtypes(config)
    found: dict[str, dict[str, Any]] = dict(tensors)
    errors: list[FieldError] = []
    for name, shape in expected.items():
        if name not in found:
            errors.append(FieldError((*LOC, name), f"missing tensor; expected shape {list(shape)}"))
    for name, info in found.items():
        where, got = (*LOC, name), list(info["shape"])
        if name not in expected:
            errors.append(FieldError(where, f"unexpected tensor (shape {got})"))
            continue
        if tuple(got) != expected[name]:
            errors.append(FieldError(where, f"expected shape {list(expected[name])}, got {got}"))
        dtype = _NAMES.get(info["dtype"], info["dtype"].lower())
        if dtype not in accepted:
            names = " or ".join(accepted)
            errors.append(FieldError(where, f"expected dtype {names}, got {dtype}"))
        elif not _finite(info["data"], dtype):
            errors.append(FieldError(where, "expected finite values, got NaN or infinity"))
    if errors:
        detail = "the weights do not fit the model's config: " + "; ".join(
            f"{e.loc[-1]}: {e.msg}" for e in errors
        )
        raise InvalidInput(detail, errors)
