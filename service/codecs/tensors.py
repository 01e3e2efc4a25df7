"""Wire tensors -> host tensors and back, with no per-element Python on the hot path.

The three wire forms (nested lists, flat `{shape, dtype, data}`, base64 `{shape, dtype, b64}`)
decode into a `WireTensor` (`service.engine.tensor`): a C-contiguous NumPy array plus its dtype
name.
"""

from __future__ import annotations

import binascii
import math
from typing import Any, Literal

import numpy as np

from service.codecs.fastjson import Numbers
from service.core.errors import InvalidInput, Loc
from service.core.limits import tensor_too_large
from service.core.schemas.config import DTYPES, DType
from service.engine.tensor import (
    CARRIER,
    WireTensor,
    bf16_bits_to_f32,
    cast_numbers,
    check_raw_finite,
)

Encoding = Literal["nested", "flat", "b64"]


def _fail(loc: Loc, msg: str) -> InvalidInput:
    return InvalidInput.at(loc, msg)


def _describe(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )


def _has_bool(obj: Any) -> bool:
    """True if any leaf of a nested list is a JSON boolean (NumPy would silently take it as 0/1)."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            if item and not isinstance(item[0], list):
                if any(type(x) is bool for x in item):
                    return True
            else:
                stack.extend(item)
        elif type(item) is bool:
            return True
    return False


def _numbers(obj: list[Any], loc: Loc, check_bools: bool) -> np.ndarray[Any, Any]:
    """Nested JSON lists -> a float64 array, refusing ragged lists and non-numbers."""
    try:
        arr = np.asarray(obj)
    except (ValueError, TypeError, OverflowError):
        raise _fail(
            loc,
            "expected a rectangular nested list of numbers (every row at the same depth the same "
            "length), got a ragged list",
        ) from None
    if arr.dtype.kind not in "iuf" and arr.size:
        got = {"b": "booleans", "U": "strings", "S": "strings"}.get(
            arr.dtype.kind, "non-numbers (null, objects or mixed types)"
        )
        raise _fail(loc, f"expected numbers, got {got}")
    if check_bools and _has_bool(obj):
        raise _fail(loc, "expected numbers, got booleans")
    return arr


MAX_DIMS = 64  # NumPy's own bound on dimensions


def check_shape(value: Any, loc: Loc, max_elements: int) -> tuple[int, ...]:
    """A wire tensor's declared shape: a list of at most MAX_DIMS non-negative integers whose
    non-empty dimensions together hold at most `max_elements` (so a shape with a 0 in it cannot
    declare dimensions that overflow when the array is made)."""
    if not isinstance(value, list) or not all(
        type(s) is int and s >= 0 for s in value
    ):  # bool is not int here
        raise _fail(loc, f"expected a list of non-negative integers, got {value!r:.80}")
    if len(value) > MAX_DIMS:
        raise _fail(loc, f"expected at most {MAX_DIMS} dimensions, got {len(value)}")
    extent = math.prod(s for s in value if s)
    if extent > max_elements and 0 in value:  # (without a 0, the caller's count says 413)
        shown = f"{value!r:.80}"
        raise _fail(
            loc,
            f"shape {shown} is too large: its dimensions span {extent} elements; the limit is "
            f"{max_elements} (RNN_SERVE_MAX_TENSOR_ELEMENTS)",
        )
    return tuple(value)


def decode_tensor(
    obj: Any,
    loc: Loc,
    model_dtype: DType,
    max_elements: int,
    *,
    check_bools: bool = True,
) -> WireTensor:
    """Decode one wire tensor. Nested lists take `model_dtype`; flat/b64 keep their own dtype.

    `check_bools=False` skips a Python scan for JSON booleans inside nested/flat lists; callers
    pass it when the raw body cannot contain any (see `service.codecs.envelope`).
    """
    if isinstance(obj, Numbers):  # decoded with the body (service.codecs.fastjson)
        arr = obj.array
        if arr.size > max_elements:
            raise tensor_too_large(loc, arr.size, max_elements)
        cast = cast_numbers(arr, model_dtype, loc, obj.peak)
        return WireTensor(cast, model_dtype, declared=False)
    if isinstance(obj, list):
        arr = _numbers(obj, loc, check_bools)
        if arr.size > max_elements:
            raise tensor_too_large(loc, arr.size, max_elements)
        return WireTensor(cast_numbers(arr, model_dtype, loc), model_dtype, declared=False)
    if not isinstance(obj, dict):
        raise _fail(
            loc,
            "expected a tensor: nested lists of numbers, {shape, dtype, data} or "
            f"{{shape, dtype, b64}}, got {_describe(obj)}",
        )
    dtype, shape, arr, form = _object_form(obj, loc, DTYPES, max_elements, check_bools)
    if form == "data":
        return WireTensor(cast_numbers(arr, dtype, loc).reshape(shape), dtype, declared=True)
    check_raw_finite(arr, dtype, (*loc, "b64"))
    return WireTensor(arr, dtype, declared=True)


def _object_form(
    obj: dict[str, Any], loc: Loc, dtypes: tuple[str, ...], max_elements: int, check_bools: bool
) -> tuple[Any, tuple[int, ...], np.ndarray[Any, Any], str]:
    """`{shape, dtype, data}` or `{shape, dtype, b64}`: its dtype (one of `dtypes`), shape,
    values (`data`'s numbers as parsed, flat; `b64`'s raw values in their carrier, shaped) and
    form."""
    forms = [k for k in ("data", "b64") if k in obj]
    allowed = {"shape", "dtype", *forms}
    extra = sorted(set(obj) - allowed)
    if len(forms) != 1 or extra or "shape" not in obj or "dtype" not in obj:
        raise _fail(
            loc,
            "expected an object with exactly the keys shape, dtype and one of data or b64, got "
            f"keys {sorted(obj)}",
        )
    dtype = obj["dtype"]
    if dtype not in dtypes:
        raise _fail((*loc, "dtype"), f"expected one of {', '.join(dtypes)}, got {dtype!r:.40}")
    shape = check_shape(obj["shape"], (*loc, "shape"), max_elements)
    count = math.prod(shape)
    if count > max_elements:
        raise tensor_too_large(loc, count, max_elements)
    if forms == ["data"]:
        data = obj["data"]
        if isinstance(data, Numbers):  # decoded with the body (service.codecs.fastjson)
            arr = data.array
            if arr.size != count:
                raise _fail(
                    (*loc, "data"),
                    f"shape {list(shape)} needs {count} numbers, got {arr.size}",
                )
            return dtype, shape, arr, "data"
        if not isinstance(data, list):
            raise _fail((*loc, "data"), f"expected a flat list of numbers, got {_describe(data)}")
        arr = _numbers(data, (*loc, "data"), check_bools)
        if arr.ndim != 1:
            raise _fail((*loc, "data"), f"expected a flat list of numbers, got {arr.ndim} levels")
        if arr.size != count:
            raise _fail(
                (*loc, "data"),
                f"shape {list(shape)} needs {count} numbers, got {arr.size}",
            )
        return dtype, shape, arr, "data"
    text = obj["b64"]
    if not isinstance(text, str):
        raise _fail((*loc, "b64"), f"expected a base64 string, got {_describe(text)}")
    try:
        raw = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        raise _fail((*loc, "b64"), "expected standard base64 (RFC 4648) text") from None
    carrier = _ID_CARRIERS[dtype] if dtype in _ID_CARRIERS else CARRIER[dtype]
    if len(raw) != count * carrier.itemsize:
        raise _fail(
            (*loc, "b64"),
            f"shape {list(shape)} of {dtype} needs {count * carrier.itemsize} bytes, "
            f"got {len(raw)}",
        )
    return dtype, shape, np.frombuffer(raw, dtype=carrier).reshape(shape), "b64"


#: token ids' wire dtypes (decoded to int64) and their carriers in `b64`
ID_DTYPES = ("int64", "int32")
_ID_CARRIERS: dict[str, np.dtype[Any]] = {"int64": np.dtype("<i8"), "int32": np.dtype("<i4")}
_ID_TOP = float(1 << 53)  # every integer below it is exact in a JSON number


def integral_ids(arr: np.ndarray[Any, Any], loc: Loc) -> np.ndarray[Any, Any]:
    """Numbers -> int64 token ids, refusing any that is not an integer."""
    if arr.dtype.kind in "iu":
        return np.ascontiguousarray(arr, dtype=np.int64)
    if arr.size and not (
        float(np.abs(arr).max()) < _ID_TOP and bool((arr == np.floor(arr)).all())
    ):  # NaN fails both
        raise _fail(loc, "expected integer token ids (an embedding's input), got other numbers")
    return np.ascontiguousarray(arr, dtype=np.int64)


def decode_ids(obj: Any, loc: Loc, max_elements: int, *, check_bools: bool = True) -> WireTensor:
    """An embedding model's input: token ids as nested lists of integers, `{shape, dtype, data}`
    or `{shape, dtype, b64}` with dtype int64 or int32; int64 on the host."""
    if isinstance(obj, Numbers):
        arr = obj.array
    elif isinstance(obj, list):
        arr = _numbers(obj, loc, check_bools)
    elif isinstance(obj, dict):
        _, shape, arr, _ = _object_form(obj, loc, ID_DTYPES, max_elements, check_bools)
        return WireTensor(integral_ids(arr, loc).reshape(shape), "int64", declared=True)
    else:
        raise _fail(
            loc,
            "expected token ids: nested lists of integers, {shape, dtype, data} or "
            f"{{shape, dtype, b64}} with dtype int64 or int32, got {_describe(obj)}",
        )
    if arr.size > max_elements:
        raise tensor_too_large(loc, arr.size, max_elements)
    return WireTensor(integral_ids(arr, loc), "int64", declared=False)


_B64_CHUNK = 3 << 20  # bytes base64-encoded in one call (a multiple of 3: no padding inside)


def _b64(arr: np.ndarray[Any, Any]) -> str:
    """Base64 of a contiguous array's bytes; a large one in pieces of a few milliseconds each, so
    that a thread encoding it lets the event loop's thread run in between (each call holds the
    GIL)."""
    raw = arr.reshape(-1).view(np.uint8).data
    if raw.nbytes <= _B64_CHUNK:
        return binascii.b2a_base64(raw, newline=False).decode()
    return "".join(
        binascii.b2a_base64(raw[i : i + _B64_CHUNK], newline=False).decode("ascii")
        for i in range(0, raw.nbytes, _B64_CHUNK)
    )


def encode_tensor(arr: np.ndarray[Any, Any], dtype: DType, encoding: Encoding) -> Any:
    """A result array -> its wire form; orjson serialises the arrays without Python floats."""
    if encoding == "b64":
        return {
            "shape": list(arr.shape),
            "dtype": dtype,
            "b64": _b64(np.ascontiguousarray(arr)),
        }
    values = bf16_bits_to_f32(arr) if dtype == "bfloat16" else arr
    values = np.ascontiguousarray(values)
    if encoding == "flat":
        return {"shape": list(arr.shape), "dtype": dtype, "data": values.reshape(-1)}
    return values
