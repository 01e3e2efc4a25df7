"""The simdjson path for nested tensors and flat `{shape, dtype, data}` tensors gives what the
orjson path gives: the same bits, and for anything it does not take, the same refusal word for
word."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import service.codecs.v1 as v1
from service.codecs.envelope import loads
from service.codecs.fastjson import Numbers, loads_forward
from service.codecs.v1 import V1Forward
from service.core.schemas.api import ForwardRequest
from service.core.schemas.config import RNNConfig

CONFIG = RNNConfig(input_size=3, hidden_size=2)


def decoded(body: bytes, fast: bool, monkeypatch: pytest.MonkeyPatch, dtype: str) -> str:
    monkeypatch.setattr(v1, "loads_forward", loads_forward if fast else loads)
    monkeypatch.setattr(v1, "FAST_JSON_MIN_BYTES", 0 if fast else 1 << 62)
    config = CONFIG.model_copy(update={"dtype": dtype})
    try:
        inputs = V1Forward(body, ForwardRequest).decode(config, 10_000).inputs
    except Exception as exc:  # the refusal is compared, whatever it is
        return f"{type(exc).__name__}: {exc}"
    arrays = [t for t in (inputs.input, inputs.h0) if t is not None]
    return repr([(t.dtype, t.shape, t.array.tobytes()) for t in arrays])


NUMBER = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.integers(min_value=-(2**64), max_value=2**64),
)
LEAF = st.one_of(NUMBER, NUMBER, NUMBER, st.booleans(), st.none(), st.text(max_size=2))


def nested(depth: int) -> st.SearchStrategy[Any]:
    if depth == 0:
        return LEAF
    return st.lists(nested(depth - 1), max_size=3)


@settings(max_examples=300, deadline=None)
@given(tensor=st.integers(1, 3).flatmap(nested), dtype=st.sampled_from(["float32", "bfloat16",
       "float16", "float64"]))  # fmt: skip
def test_both_paths_agree(tensor: Any, dtype: str) -> None:
    try:
        body = orjson.dumps({"input": tensor})
    except orjson.JSONEncodeError:  # an integer orjson cannot write: write it as text
        body = ('{"input": ' + repr(tensor).replace("True", "true").replace("False", "false")
                .replace("None", "null").replace("'", '"') + "}").encode()  # fmt: skip
    with pytest.MonkeyPatch.context() as m:
        assert decoded(body, True, m, dtype) == decoded(body, False, m, dtype)


def mixed(depth: int) -> st.SearchStrategy[Any]:
    """Arrays whose rows may nest deeper than their neighbours (`[[1, 2], [[3], 4]]`)."""
    if depth == 0:
        return NUMBER
    return st.lists(st.one_of(NUMBER, mixed(depth - 1)), min_size=1, max_size=3)


@settings(max_examples=300, deadline=None)
@given(tensor=st.integers(1, 3).flatmap(mixed))
def test_both_paths_agree_on_rows_of_mixed_depth(tensor: Any) -> None:
    body = ('{"input": ' + repr(tensor) + ', "lengths": [1], "output_encoding": "nested"}').encode()
    with pytest.MonkeyPatch.context() as m:
        assert decoded(body, True, m, "float32") == decoded(body, False, m, "float32")


@pytest.mark.parametrize(
    "body",
    [
        # an array among the innermost numbers: simdjson's as_buffer flattens it, the walk of
        # the rows above cannot see it; the body's count of "[" does
        b'{"input": [[1, 2], [[3], 4]]}',
        b'{"input": [[1, 2], [3, [4]]]}',
        b'{"input": [1, [2]]}',
        b'{"input": [[[1, 2], [3, [4]]]], "h0": [[0.5, 0.5]]}',
        # a "[" inside a string cannot be told from an array by counting: orjson's path
        b'{"input": [[[1, 2, 3]]], "output_encoding": "[nested"}',
        b'{"input": [[[1, 2, 3]]], "lengths": [1], "config": {"[": 1}}',
        b'{"input": [[[1, 2, 3]]], "output_encoding": "\\u005b"}',
        # another value nested as deep as the parsers allow: counted without recursion
        b'{"input": [[[1, 2, 3]]], "lengths": ' + b"[" * 1020 + b"]" * 1020 + b"}",
        b'{"input": [[[0.1, 2.5, -3]]], "h0": [[0.25, 1e-30]]}',  # taken
        b'{"input": [[[1,2]],[[3],[4]]]}',  # ragged beyond the first row
        b'{"input": [[[true, 1, 2]]]}',
        b'{"input": [[[1e400, 1, 2]]]}',
        b'{"input": [[[]]]}',
        b'{"input": 1, "input": [[[1.0, 2, 3]]]}',  # a key twice: the last wins
        b'{"input": [[[9007199254740993, 1, 2]]]}',  # past 2**53
        b'{"input": [[[1, 2, 3]]], "output_encoding": "flat"}',
        b"[1]",
        b"not json",
    ],
)
def test_edges_agree(body: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m:
        assert decoded(body, True, m, "float32") == decoded(body, False, m, "float32")


def test_the_fast_path_is_taken_for_a_plain_nested_body() -> None:
    x = np.random.default_rng(0).standard_normal((50, 1, 64)).astype(np.float32)
    parsed = loads_forward(orjson.dumps({"input": x.tolist(), "output_encoding": "b64"}))
    assert isinstance(parsed["input"], Numbers)
    assert parsed["input"].array.shape == (50, 1, 64)
    assert parsed["output_encoding"] == "b64"


@pytest.mark.parametrize(
    "body",
    [
        b'{"input": [[1, 2], [[3], 4]]}',
        b'{"input": [1, [2]]}',
        b'{"input": [[[1, 2]], [[3], [4]]]}',
    ],
)
def test_rows_of_mixed_depth_are_not_taken(body: bytes) -> None:
    assert not isinstance(loads_forward(body)["input"], Numbers)


def test_arrays_in_other_values_are_counted() -> None:
    parsed = loads_forward(b'{"input": [[[1, 2, 3]]], "lengths": [1], "h0": [[0.5, 0.5]]}')
    assert isinstance(parsed["input"], Numbers)
    assert isinstance(parsed["h0"], Numbers)
    assert parsed["lengths"] == [1]


FLAT_DATA = st.one_of(
    st.lists(NUMBER, max_size=8),  # mostly plain numbers: the path taken
    st.lists(NUMBER, max_size=8),
    st.lists(st.one_of(LEAF, st.lists(NUMBER, max_size=2)), max_size=8),  # anything else
    LEAF,
)
SHAPE = st.one_of(
    st.lists(st.integers(0, 4), max_size=3),
    st.just([True, 2]),
    st.just("3"),
    st.lists(st.integers(-1, 3), max_size=2),
)


def _text(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:  # an integer orjson cannot write: write it as text
        return (repr(value).replace("True", "true").replace("False", "false")
                .replace("None", "null").replace("'", '"')).encode()  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    data=FLAT_DATA,
    shape=SHAPE,
    dtype=st.sampled_from(["float32", "bfloat16", "float16", "float64", "int64", "complex"]),
    model_dtype=st.sampled_from(["float32", "float16", "float64"]),
    extra=st.sampled_from(["", ', "b64": ""', ', "extra": [1]', ', "data": [1.0]']),
)
def test_both_paths_agree_on_flat_tensors(
    data: Any, shape: Any, dtype: str, model_dtype: str, extra: str
) -> None:
    body = (b'{"input": {"shape": ' + _text(shape) + b', "dtype": "' + dtype.encode()
            + b'", "data": ' + _text(data) + extra.encode() + b"}}")  # fmt: skip
    with pytest.MonkeyPatch.context() as m:
        assert decoded(body, True, m, model_dtype) == decoded(body, False, m, model_dtype)


@pytest.mark.parametrize(
    "body",
    [
        b'{"input": {"shape": [1, 1, 3], "dtype": "float32", "data": [0.5, 1, -2e-3]}}',  # taken
        b'{"input": {"shape": [1, 1, 3], "dtype": "float32", "data": [1, [2], 3]}}',
        b'{"input": {"shape": [1, 1, 3], "dtype": "float32", "data": [1, true, 3]}}',
        b'{"input": {"shape": [1, 1, 3], "dtype": "float32", "data": [1, 2]}}',
        b'{"input": {"shape": [1, 1, 3], "dtype": "float32", "data": [[1, 2, 3]]}}',
        b'{"input": {"shape": [1, 1, 3], "dtype": "float32", "data": [1, 2, 1e400]}}',
        b'{"input": {"shape": [1, 1, 3], "dtype": "float32", "data": [1, 2, 9007199254740993]}}',
        b'{"input": {"shape": [1, 1, 3], "dtype": "float32", "data": [1, 2, 3], "data": [4]}}',
        b'{"input": {"shape": [1, 1, 3], "dtype": "float[32", "data": [1, 2, 3]}}',
        b'{"input": {"shape": [1, 1, 3], "dtype": "float16", "data": [1, 2, 70000]}}',
        b'{"input": {"shape": [1, 1, 0], "dtype": "float32", "data": []}}',
        b'{"input": {"shape": [1, 1, 3], "dtype": "float32", "data": [1, 2, 3], "b64": ""}}',
        b'{"input": {"shape": [3], "dtype": "float32", "data": [1, 2, 3]}}',
        b'{"input": {"shape": [1, 1, 3], "dtype": "float32", "data": [1, 2, 3]}, '
        b'"h0": {"shape": [2, 1, 2], "dtype": "float32", "data": [1, 2, 3, 4]}}',
        b'{"input": {"shape": [1, 1, 3], "dtype": "float32", "data": [1, 2, 3]}, '
        b'"h0": [[[1, 2]], [[3, 4]]]}',
    ],
)
def test_flat_edges_agree(body: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m:
        for dtype in ("float32", "float16"):
            assert decoded(body, True, m, dtype) == decoded(body, False, m, dtype)


def test_the_fast_path_is_taken_for_a_plain_flat_body() -> None:
    x = np.random.default_rng(0).standard_normal((50, 32, 64)).astype(np.float32)
    wire = {"shape": list(x.shape), "dtype": "float32", "data": x.ravel().tolist()}
    parsed = loads_forward(orjson.dumps({"input": wire, "output_encoding": "flat"}))
    data = parsed["input"]["data"]
    assert isinstance(data, Numbers)
    assert parsed["input"]["shape"] == [50, 32, 64]
    assert parsed["input"]["dtype"] == "float32"
    assert np.array_equal(data.array.astype(np.float32), x.ravel())


@st.composite
def fitting(draw: st.DrawFn) -> tuple[list[int], list[Any]]:
    """A flat tensor whose shape fits the model (L, N, 3) and whose data fills it."""
    shape = [draw(st.integers(1, 3)), draw(st.integers(1, 3)), 3]
    return shape, draw(st.lists(NUMBER, min_size=shape[0] * shape[1] * 3,
                                max_size=shape[0] * shape[1] * 3))  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(tensor=fitting(), model_dtype=st.sampled_from(["float32", "bfloat16", "float16", "float64"]))
def test_both_paths_agree_on_flat_tensors_that_fit(
    tensor: tuple[list[int], list[Any]], model_dtype: str
) -> None:
    shape, data = tensor
    body = (b'{"input": {"shape": ' + _text(shape) + b', "dtype": "' + model_dtype.encode()
            + b'", "data": ' + _text(data) + b"}}")  # fmt: skip
    with pytest.MonkeyPatch.context() as m:
        fast, slow = decoded(body, True, m, model_dtype), decoded(body, False, m, model_dtype)
        assert fast == slow


def test_a_small_body_goes_through_orjson_and_a_large_one_through_simdjson(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[int] = []

    def spy(body: bytes) -> Any:
        seen.append(len(body))
        return loads_forward(body)

    monkeypatch.setattr(v1, "loads_forward", spy)
    rng = np.random.default_rng(0)
    small = orjson.dumps({"input": rng.standard_normal((2, 1, 3)).tolist()})
    large = orjson.dumps({"input": rng.standard_normal((400, 1, 3)).tolist()})
    assert len(small) < v1.FAST_JSON_MIN_BYTES <= len(large)
    for body in (small, large):
        V1Forward(body, ForwardRequest).decode(CONFIG, 10_000)
    assert seen == [len(large)]
