"""Forward bodies parsed with no Python float per tensor element: simdjson decodes a nested
number array, or a flat tensor's `data`, straight into a float64 NumPy array (`Numbers`); the
envelope around it becomes the same Python values orjson would give.

The fast path is taken only when it cannot differ from orjson's: the body is one JSON object
with no key twice, and each tensor (`input`, `h0`, `c0`) is a rectangular nested array of
numbers below 2**53 in magnitude, or an object (no key twice) whose `data` is a non-empty array
of such numbers, one level deep. Anything else — invalid JSON, booleans, nulls, strings,
ragged rows, rows of mixed depth, an empty dimension, huge integers — is parsed by orjson
(`envelope.loads`), so its answer or refusal is today's, word for word. The elements are the
same float64 values either way (both parsers round correctly), so what the model sees is
bit-for-bit the same.

Rectangular is proved in two parts. The row walk checks that every row above the innermost
level is an array of its level's length. simdjson's `as_buffer` flattens whatever it finds, so
an array nested among the innermost numbers (`[[1, 2], [[3], 4]]`) would pass the walk; the
body's count of `[` rules it out: with no `[` inside any string, each `[` opens one array, and
the count must equal the arrays the shapes account for plus those of the other values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import simdjson

from service.codecs.envelope import loads

TENSORS = ("input", "h0", "c0")
_EXACT = float(2**53)  # integers up to here are the same float64 whichever parser read them


@dataclass(frozen=True, slots=True)
class Numbers:
    """A nested JSON number array, already decoded: float64, in its nested shape, with its
    largest magnitude (the range checks need it; one reduction, done here)."""

    array: np.ndarray[Any, Any]
    peak: float


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


def _numbers(node: Any) -> tuple[Numbers, int] | None:
    """The array's numbers and how many JSON arrays a rectangular array of its shape has."""
    shape = _shape(node)
    if shape is None:
        return None
    try:
        flat = np.frombuffer(node.as_buffer(of_type="d"), dtype=np.float64)
    except (TypeError, ValueError):  # a boolean, null, string or object among the numbers
        return None
    if flat.size != math.prod(shape):
        return None
    peak = float(np.abs(flat).max()) if flat.size else 0.0
    if not peak < _EXACT:
        return None  # (NaN cannot come from JSON; the comparison also refuses inf)
    arrays = sum(math.prod(shape[:depth]) for depth in range(len(shape)))
    return Numbers(flat.reshape(shape), peak), arrays


def _flat(node: Any) -> tuple[dict[str, Any], int] | None:
    """A `{shape, dtype, data}` object with `data` as `Numbers` (the other keys as orjson gives
    them, checked where the tensor is decoded), and the JSON arrays in it; None where orjson's
    path must answer."""
    keys = list(node.keys())
    if len(keys) != len(set(keys)) or any("[" in key for key in keys):
        return None
    data = node["data"]
    if not isinstance(data, simdjson.Array) or len(data) == 0:
        return None
    if isinstance(data[0], simdjson.Array):
        return None  # nested `data`: orjson's path refuses it
    try:
        flat = np.frombuffer(data.as_buffer(of_type="d"), dtype=np.float64)
    except (TypeError, ValueError):  # a boolean, null, string or object among the numbers
        return None
    if flat.size != len(data):
        return None  # an array among the numbers (the body's count of "[" says so too)
    peak = float(np.abs(flat).max())
    if not peak < _EXACT:
        return None
    out: dict[str, Any] = {}
    arrays = 1
    for key in keys:
        if key == "data":
            out[key] = Numbers(flat, peak)
            continue
        out[key] = plain = _python(node[key])
        other = _arrays(plain)
        if other is None:
            return None
        arrays += other
    return out, arrays


def _python(value: Any) -> Any:
    if isinstance(value, simdjson.Array):
        return value.as_list()
    if isinstance(value, simdjson.Object):
        return value.as_dict()
    return value


def _arrays(value: Any) -> int | None:
    """The JSON arrays in a plain value; None if a string in it (a key too) holds a `[`.
    Walked with a stack, not recursion: a body may nest as deep as the parsers allow."""
    total, todo = 0, [value]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            if "[" in item:
                return None
        elif isinstance(item, list):
            total += 1
            todo.extend(item)
        elif isinstance(item, dict):
            if any("[" in key for key in item):
                return None
            todo.extend(item.values())
    return total


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
    arrays = 0
    for key in keys:
        value = doc[key]
        if key in TENSORS and isinstance(value, simdjson.Array):
            found = _numbers(value)
            if found is None:
                return loads(body)
            out[key], tensor_arrays = found
            arrays += tensor_arrays
        elif key in TENSORS and isinstance(value, simdjson.Object) and "data" in value:
            flat = _flat(value)
            if flat is None:
                return loads(body)
            out[key], tensor_arrays = flat
            arrays += tensor_arrays
        else:
            out[key] = plain = _python(value)
            other = _arrays(plain)
            if other is None or "[" in key:
                return loads(body)
            arrays += other
    if arrays and body.count(b"[") != arrays:
        return loads(body)  # an array among a tensor's numbers: not rectangular
    return out
