"""A session's state in JSON (the v1 API's form): the safetensors form's tags, and the tensors in
base64 (`{shape, dtype, b64}`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.codecs.tensors import decode_tensor, encode_tensor
from service.core.errors import InvalidInput
from service.core.schemas.config import DType
from service.engine.state import FORMAT, PART_NAMES, SessionState, of_tags


def to_json(state: SessionState) -> dict[str, Any]:
    body: dict[str, Any] = {
        **state.tags(),
        "steps": state.steps,
        "batched": state.batched,
        "batch_size": state.batch,
    }
    for name, p in zip(PART_NAMES, state.parts, strict=False):
        body[name] = encode_tensor(p, state.dtype, "b64")
    return body


def from_json(
    obj: Mapping[str, Any], dtype: DType, max_elements: int, loc: tuple[str, ...]
) -> SessionState:
    """A state from its JSON form (decoded as the model's `dtype`)."""
    if obj.get("format") != FORMAT:
        raise InvalidInput.at(
            (*loc, "format"), f"expected {FORMAT!r} (a state exported by rnn-serve)"
        )
    tags = {k: v for k, v in obj.items() if k not in PART_NAMES}
    steps, batched, batch = tags.get("steps"), tags.get("batched"), tags.get("batch_size")
    if type(steps) is not int or steps < 0:
        raise InvalidInput.at((*loc, "steps"), f"expected a non-negative integer, got {steps!r}")
    if batched not in (None, True, False):
        raise InvalidInput.at((*loc, "batched"), "expected true, false or null")
    if batched and (type(batch) is not int or batch < 0):
        raise InvalidInput.at((*loc, "batch_size"), "expected a non-negative integer")
    tags.update(
        steps=str(steps),
        batched={None: "unknown", True: "true", False: "false"}[batched],
        batch_size="" if batch is None else str(batch),
    )
    parts = []
    for name in PART_NAMES:
        if obj.get(name) is not None:
            t = decode_tensor(obj[name], (*loc, name), dtype, max_elements)
            parts.append(t.array)
    return of_tags(tags, tuple(parts), loc)
