"""Tensors on the host: a NumPy array plus the dtype it stands for.

The engine's value type for inputs, states and results, whatever wire form a tensor came in (see
`service.codecs.tensors`). bfloat16 has no NumPy dtype, so it travels as its raw uint16 bit
patterns and is viewed as torch.bfloat16 in the worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from service.core.errors import InvalidInput, Loc
from service.core.schemas.config import DType

#: a tensor's dtype on the wire: a model's float dtype, or int64 for an embedding's token ids
WireDType = DType | Literal["int64"]

# The NumPy dtype that carries each wire dtype (little-endian, as the contract says).
CARRIER: dict[str, np.dtype[Any]] = {
    "float32": np.dtype("<f4"),
    "float16": np.dtype("<f2"),
    "float64": np.dtype("<f8"),
    "bfloat16": np.dtype("<u2"),
    "int64": np.dtype("<i8"),
}
_BF16_MAX = 3.3895313892515355e38
_TOP = {d: float(np.finfo(CARRIER[d]).max) for d in ("float32", "float16", "float64")}


@dataclass(slots=True)  # a value: never changed once made (not frozen: that costs per request)
class WireTensor:
    """A decoded tensor: `array` holds `dtype`'s values (bfloat16 as uint16 bit patterns)."""

    array: np.ndarray[Any, Any]
    dtype: WireDType
    declared: bool  # the client stated the dtype (flat/b64); nested lists take the model's

    @property
    def shape(self) -> tuple[int, ...]:
        shape: tuple[int, ...] = self.array.shape
        return shape

    @property
    def ndim(self) -> int:
        return len(self.array.shape)


def cast_numbers(
    arr: np.ndarray[Any, Any], dtype: DType, loc: Loc, peak: float | None = None
) -> np.ndarray[Any, Any]:
    """Cast numbers to `dtype`'s carrier, refusing any value that is not finite there.

    The range is checked before the cast (not with np.errstate around it: that context manager
    costs more than the whole cast of a small tensor). `peak`, the largest magnitude, where the
    caller already has it.
    """
    top = _BF16_MAX if dtype == "bfloat16" else _TOP[dtype]
    # One reduction catches NaN, infinities and overflow alike (NaN compares False).
    if arr.size and not (float(np.abs(arr).max()) if peak is None else peak) <= top:
        raise InvalidInput.at(loc, f"expected finite numbers within {dtype}'s range")
    if dtype == "bfloat16":
        return _f32_to_bf16_bits(np.ascontiguousarray(arr, dtype=np.float32))
    return np.ascontiguousarray(arr, dtype=CARRIER[dtype])


def _f32_to_bf16_bits(f32: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Round-to-nearest-even float32 -> bfloat16 bit patterns, as torch's .to(bfloat16) does."""
    bits = f32.view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def bf16_bits_to_f32(bits: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """bfloat16 bit patterns -> the float32 values they stand for (exact)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def check_raw_finite(arr: np.ndarray[Any, Any], dtype: DType, loc: Loc) -> None:
    """Refuse NaN or infinity in raw values of `dtype` (bfloat16: its bit patterns)."""
    if not arr.size:
        return
    # bfloat16 bits: an exponent of all ones is an infinity or a NaN.
    bad = ((arr & 0x7F80) == 0x7F80).any() if dtype == "bfloat16" else not np.isfinite(arr).all()
    if bad:
        raise InvalidInput.at(loc, f"expected finite {dtype} values, got NaN or infinity")
