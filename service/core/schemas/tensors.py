"""The JSON Schema of a wire tensor. Elements are validated by NumPy (service.codecs.tensors), not
by pydantic: per-element validation of large tensors costs far more than the forward itself."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import WithJsonSchema

from service.core.schemas.config import DTYPES

_NUMBER = {"type": "number"}
_ROWS = {"type": "array", "items": {"type": "array", "items": _NUMBER}}
_SHAPE = {"type": "array", "items": {"type": "integer", "minimum": 0}, "maxItems": 3}
_DTYPE = {"type": "string", "enum": list(DTYPES)}

TENSOR_SCHEMA: dict[str, Any] = {
    "title": "Tensor",
    "description": (
        "A tensor in one of three forms: nested lists of numbers (taking the model's dtype); "
        "{shape, dtype, data} with row-major numbers; or {shape, dtype, b64} with raw "
        "little-endian row-major bytes in base64."
    ),
    "anyOf": [
        {"title": "Nested3D", "type": "array", "items": _ROWS},
        {"title": "Nested2D", **_ROWS},
        {
            "title": "FlatTensor",
            "type": "object",
            "properties": {
                "shape": _SHAPE,
                "dtype": _DTYPE,
                "data": {"type": "array", "items": _NUMBER},
            },
            "required": ["shape", "dtype", "data"],
            "additionalProperties": False,
        },
        {
            "title": "Base64Tensor",
            "type": "object",
            "properties": {
                "shape": _SHAPE,
                "dtype": _DTYPE,
                "b64": {"type": "string", "contentEncoding": "base64"},
            },
            "required": ["shape", "dtype", "b64"],
            "additionalProperties": False,
        },
    ],
}

Tensor = Annotated[Any, WithJsonSchema(TENSOR_SCHEMA)]
