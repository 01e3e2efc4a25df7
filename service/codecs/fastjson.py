"""Forward bodies parsed with no Python float per tensor element: simdjson decodes a nested
number array straight into a float64 NumPy array (`Numbers`); the envelope around it becomes
the same Python values orjson would give.

The fast path is taken only when it cannot differ from orjson's: the body is one JSON object
with no key twice, and each tensor (`input`, `h0`, `c0`) is a rectangular nested array of
numbers below 2**53 in magnitude. Anything else — invalid JSON, booleans, nulls, strings,
ragged rows, an empty dimension, huge integers — is parsed by orjson (`envelope.loads`), so its
answer or refusal is today's, word for word. The elements are the same float64 values either
way (both parsers round correctly), so what the model sees is bit-for-bit the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import simdjson

from service.codecs.envelope import loads

TENSORS = ("input", "h0", "c0")
_EXACT = float(2**53)  # integers up to here are the same float64 whichever parser read them


@dataclass(frozen=True, slots=True)
class Numbers:
    """A nested JSON number array, already decoded: float64, in its nested shape."""

    array: np.ndarray[Any, Any]


def _shape(node: Any) -> list[int] | None:
    """The array's shape if every row at every level has its level's length (rectangular)."""
    shape: list[int] = []
    level = [node]
    while True:
        first = level[0]
        if not isinstance(first, simdjson.Array):
            return shape
        n = len(first)
        if n == 0:
            return None  # an empty dimension: orjson's path says what it means
        for row in level:
            if not isinstance(row, simdjson.Array) or len(row) != n:
                return None
        shape.append(n)
        if len(shape) > 3:
            return None  # deeper than any tensor here: orjson's path refuses it
        nxt = level[0][0]
        if not isinstance(nxt, simdjson.Array):
            return shape
        level = [item for row in level for item in row]


def _numbers(node: Any) -> Numbers | None:
    shape = _shape(node)
    if shape is None:
        return None
    try:
        flat = np.frombuffer(node.as_buffer(of_type="d"), dtype=np.float64)
    except (TypeError, ValueError):  # a boolean, null, string or object among the numbers
        return None
    if flat.size != int(np.prod(shape)) or (flat.size and not np.abs(flat).max() < _EXACT):
        return None  # (NaN cannot come from JSON; the comparison also refuses inf)
    return Numbers(flat.reshape(shape))


def _python(value: Any) -> Any:
    if isinstance(value, simdjson.Array):
        return value.as_list()
    if isinstance(value, simdjson.Object):
        return value.as_dict()
    return value


def loads_forward(body: bytes) -> Any:
    """A forward body as `envelope.loads` gives it, with its nested tensors as `Numbers`."""
    try:
        doc = simdjson.Parser().parse(body)
    except (ValueError, RuntimeError):
        return loads(body)
    if not isinstance(doc, simdjson.Object):
        return loads(body)
    keys = list(doc.keys())
    if len(keys) != len(set(keys)):
        return loads(body)  # a key twice: orjson keeps the last one, and so must we
    out: dict[str, Any] = {}
    for key in keys:
        value = doc[key]
        if key in TENSORS and isinstance(value, simdjson.Array):
            numbers = _numbers(value)
            if numbers is None:
                return loads(body)
            out[key] = numbers
        else:
            out[key] = _python(value)
    return out
