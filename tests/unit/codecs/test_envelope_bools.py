"""`may_hide_bools`: whether a body can hold a JSON boolean beyond the envelope's own, decided
from the raw bytes. It may say yes when there is none; it must never say no when there is one."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.codecs.envelope import may_hide_bools


@pytest.mark.parametrize(
    ("body", "known", "expected"),
    [
        (b'{"input": [[[1, 2]]], "h0": [[0.5]]}', 0, False),  # no r, no a: the memchr answer
        (b'{"input": [[[1, true]]]}', 0, True),
        (b'{"input": [[[false, 2]]]}', 0, True),
        (b'{"input": [[[1, 2]]], "start_step": 3}', 0, False),  # r and a, but neither word
        (b'{"config": {"bias": true}, "input": [[[1, 2]]]}', 1, False),
        (b'{"config": {"bias": true}, "input": [[[1, true]]]}', 1, True),
    ],
)
def test_known_bodies(body: bytes, known: int, expected: bool) -> None:
    assert may_hide_bools(body, known) is expected


JSON = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


def _bools(value: object) -> int:
    if isinstance(value, bool):
        return 1
    if isinstance(value, list):
        return sum(_bools(v) for v in value)
    if isinstance(value, dict):
        return sum(_bools(v) for v in value.values())
    return 0


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_never_misses_a_boolean(value: object) -> None:
    body = orjson.dumps(value)
    if _bools(value):
        assert may_hide_bools(body, 0)
        assert may_hide_bools(body, _bools(value) - 1)
