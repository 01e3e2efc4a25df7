"""A session's chunk as one binary WebSocket frame, and its answer as one.

Both are a fixed little-endian header followed by one tensor's raw little-endian values:

    offset  size  field
    0       4     magic b"RNS1"
    4       8     step: int64. A chunk: the step it expects to start at (its `start_step`),
                  or -1 for none. An answer: the session's steps after the chunk.
    12      1     dtype: 0 float32, 1 float16, 2 bfloat16 (its bit patterns), 3 float64,
                  4 int64, 5 int32 (int64 and int32: token ids)
    13      1     ndim: 1 to 3
    14      2     reserved: 0
    16      4*n   the shape: ndim uint32
    16+4n   ...   the values, C order

A chunk's tensor is its `input` (no `lengths`: a chunk that needs them is a JSON frame). An
answer's tensor is the head's output for a model with a head, else `output`; a JSON frame
gets every tensor.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

from service.codecs.pipeline import Decoded, Encoded, Served
from service.codecs.tensors import integral_ids
from service.core.errors import InvalidInput
from service.core.limits import tensor_too_large
from service.core.schemas.config import RNNConfig
from service.engine.job import Inputs
from service.engine.tensor import CARRIER, WireTensor, check_raw_finite
from service.engine.validate import INPUT

MAGIC = b"RNS1"
HEADER = struct.Struct("<4sqBBH")
DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32")
_CARRIERS = {**CARRIER, "int32": np.dtype("<i4")}
_LOC = ("frame",)
MEDIA_TYPE = "application/octet-stream"


def _fail(msg: str, where: str = "header") -> InvalidInput:
    return InvalidInput.at((*_LOC, where), msg)


class BinaryChunk:
    """A binary frame's chunk: the codec for the data plane's `chunk`."""

    def __init__(self, data: bytes) -> None:
        if len(data) < HEADER.size:
            raise _fail(f"expected a {HEADER.size}-byte header, got {len(data)} bytes")
        magic, step, code, ndim, _ = HEADER.unpack_from(data)
        if magic != MAGIC:
            raise _fail(f"expected the magic {MAGIC!r}, got {magic!r}")
        if code >= len(DTYPES):
            raise _fail(f"dtype code {code} is not one of 0-{len(DTYPES) - 1}")
        if not 1 <= ndim <= 3:
            raise _fail(f"ndim must be 1 to 3, got {ndim}")
        end = HEADER.size + 4 * ndim
        if len(data) < end:
            raise _fail(f"the header says {ndim} dimensions; the frame ends before them")
        self.shape = tuple(struct.unpack_from(f"<{ndim}I", data, HEADER.size))
        self.dtype = DTYPES[code]
        self.start_step = None if step == -1 else step
        if step < -1:
            raise _fail(f"step must be -1 (none) or a step, got {step}")
        self._values = memoryview(data)[end:]

    def decode(self, config: RNNConfig, max_elements: int) -> Decoded:
        count = math.prod(self.shape)
        if count > max_elements:
            raise tensor_too_large(INPUT, count, max_elements)
        carrier = _CARRIERS[self.dtype]
        if len(self._values) != count * carrier.itemsize:
            raise _fail(
                f"shape {list(self.shape)} of {self.dtype} needs {count * carrier.itemsize} "
                f"bytes, the frame has {len(self._values)}",
                "values",
            )
        arr = np.frombuffer(self._values, dtype=carrier).reshape(self.shape)
        if self.dtype in ("int64", "int32"):
            if not config.ids:
                raise InvalidInput.at(
                    (*INPUT, "dtype"), f"expected {config.dtype} features, got {self.dtype} ids"
                )
            x = WireTensor(integral_ids(arr, INPUT), "int64", declared=True)
        elif config.ids:
            raise InvalidInput.at(
                (*INPUT, "dtype"), f"this model takes token ids (int64 or int32), got {self.dtype}"
            )
        else:
            check_raw_finite(arr, self.dtype, (*_LOC, "values"))  # type: ignore[arg-type]
            x = WireTensor(arr, self.dtype, declared=True)  # type: ignore[arg-type]
        return Decoded(Inputs(x), None, self.start_step)

    def encode(self, served: Served) -> Encoded:
        result, config = served.result, served.spec.config
        arr: Any = result.head if result.head is not None else result.output
        steps = served.session.steps if served.session is not None else -1
        return Encoded(pack(arr, config.dtype, steps), MEDIA_TYPE)


def pack(arr: np.ndarray[Any, Any], dtype: str, step: int) -> bytes:
    """One tensor as a frame: the header, then its values."""
    values = np.ascontiguousarray(arr, dtype=_CARRIERS[dtype])
    header = HEADER.pack(MAGIC, step, DTYPES.index(dtype), values.ndim, 0)
    return header + struct.pack(f"<{values.ndim}I", *values.shape) + values.tobytes()


def unpack(data: bytes) -> tuple[int, str, np.ndarray[Any, Any]]:
    """(step, dtype, values) of a frame (the examples' and the tests' reader)."""
    frame = BinaryChunk(data)
    carrier = _CARRIERS[frame.dtype]
    values = np.frombuffer(frame._values, dtype=carrier).reshape(frame.shape)
    return (-1 if frame.start_step is None else frame.start_step), frame.dtype, values
