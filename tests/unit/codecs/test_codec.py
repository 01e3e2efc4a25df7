"""Wire <-> NumPy codec: the three forms, dtypes, and refusals."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from service.codecs.tensors import decode_tensor, encode_tensor
from service.core.errors import InvalidInput, PayloadTooLarge
from service.engine.tensor import bf16_bits_to_f32, cast_numbers

LOC = ("body", "input")


def test_nested_takes_the_model_dtype() -> None:
    t = decode_tensor([[1, 2.5]], LOC, "float16", 100)
    assert t.dtype == "float16"
    assert not t.declared
    assert t.array.dtype == np.float16
    assert t.array.tolist() == [[1.0, 2.5]]


def test_flat_and_b64_keep_their_dtype() -> None:
    arr = np.arange(6, dtype=np.float64).reshape(2, 3)
    f = decode_tensor(
        {"shape": [2, 3], "dtype": "float64", "data": arr.ravel().tolist()}, LOC, "float32", 100
    )
    b = decode_tensor(
        {"shape": [2, 3], "dtype": "float64", "b64": base64.b64encode(arr.tobytes()).decode()},
        LOC,
        "float32",
        100,
    )
    for t in (f, b):
        assert t.dtype == "float64"
        assert t.declared
        np.testing.assert_array_equal(t.array, arr)


@given(arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(0, 4), st.integers(1, 4)),
              elements=st.floats(-1e6, 1e6, width=32)))  # fmt: skip
def test_round_trip_every_encoding(arr: np.ndarray) -> None:
    # nested lists cannot say (1, 0, 1) from (1, 0): zero-size tensors need flat or b64
    for encoding in ("nested", "flat", "b64") if arr.size else ("flat", "b64"):
        wire = encode_tensor(arr, "float32", encoding)
        if encoding == "nested":
            wire = wire.tolist()
        elif encoding == "flat":
            wire = {**wire, "data": wire["data"].tolist()}
        back = decode_tensor(wire, LOC, "float32", 10**6)
        np.testing.assert_array_equal(back.array, arr)


@given(
    st.lists(
        st.floats(
            -3.0000000054977558e38, 3.0000000054977558e38, width=32, allow_subnormal=False
        ).map(float),
        min_size=1,
        max_size=50,
    )
)
def test_bfloat16_rounding_matches_torch(values: list[float]) -> None:
    t = decode_tensor(values and [values], LOC, "bfloat16", 1000)
    want = torch.tensor([values], dtype=torch.float32).to(torch.bfloat16)
    np.testing.assert_array_equal(t.array, want.view(torch.int16).numpy().view(np.uint16))
    np.testing.assert_array_equal(bf16_bits_to_f32(t.array), want.float().numpy())


def test_bfloat16_b64_nonfinite_refused() -> None:
    bits = np.array([0x3F80, 0x7F80], dtype="<u2")  # 1.0, +inf
    with pytest.raises(InvalidInput, match="NaN or infinity"):
        decode_tensor(
            {
                "shape": [1, 2],
                "dtype": "bfloat16",
                "b64": base64.b64encode(bits.tobytes()).decode(),
            },
            LOC,
            "bfloat16",
            10,
        )


@pytest.mark.parametrize(
    ("value", "dtype", "fragment"),
    [([[70000.0]], "float16", "float16's range"), ([[1e39]], "float32", "float32's range"),
     ([[3.4e38]], "bfloat16", "bfloat16's range")],
)  # fmt: skip
def test_overflow_in_target_dtype_refused(value: list[Any], dtype: str, fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        decode_tensor(value, LOC, dtype, 10)  # type: ignore[arg-type]


def test_limits() -> None:
    with pytest.raises(PayloadTooLarge):
        decode_tensor([[0.0] * 11], LOC, "float32", 10)
    with pytest.raises(PayloadTooLarge):
        decode_tensor({"shape": [10, 10], "dtype": "float32", "data": []}, LOC, "float32", 99)


def test_bools_found_only_when_asked() -> None:
    with pytest.raises(InvalidInput, match="booleans"):
        decode_tensor([[1.0, True]], LOC, "float32", 10)
    with pytest.raises(InvalidInput, match="booleans"):
        decode_tensor([[True, False]], LOC, "float32", 10, check_bools=False)  # all-bool: dtype
    assert decode_tensor([[1.0, 2.0]], LOC, "float32", 10, check_bools=False).shape == (1, 2)


def test_cast_numbers_keeps_values_exact_when_representable() -> None:
    arr = np.array([0.5, -2.0, 1024.0])
    for dtype in ("float16", "float32", "float64"):
        np.testing.assert_array_equal(cast_numbers(arr, dtype, LOC).astype(np.float64), arr)
