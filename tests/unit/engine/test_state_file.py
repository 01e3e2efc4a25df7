"""A state's safetensors form, written by rnn-serve's own encoder: safetensors reads it, and it
says what safetensors' own `save` says."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load, save

from service.engine.state import SessionState, from_safetensors, to_safetensors


def _state(dtype: str, parts: tuple[np.ndarray, ...]) -> SessionState:
    return SessionState("m", "sha256:abc", "LSTM", dtype, 7, parts, True, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("dtype", "carrier"),
    [("float32", "<f4"), ("float16", "<f2"), ("float64", "<f8"), ("bfloat16", "<u2")],
)
def test_the_file_reads_back_as_safetensors_writes_it(dtype: str, carrier: str) -> None:
    rng = np.random.default_rng(0)
    h = (rng.standard_normal((2, 1, 3)) * 100).astype(carrier)
    c = np.asfortranarray((rng.standard_normal((2, 3, 4)) * 100).astype(carrier))  # not C order
    extra = {"last.output": rng.standard_normal((5, 1, 3)).astype(carrier)}
    data = to_safetensors(_state(dtype, (h, c)), {"id": "s1", "ttl": "600.0"}, extra)
    ours = load(data)
    theirs = load(save({"h": h, "c": np.ascontiguousarray(c), **extra}))
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert ours[name].dtype == theirs[name].dtype
        np.testing.assert_array_equal(ours[name], theirs[name])
    state, tags, tensors = from_safetensors(data)
    assert state.steps == 7
    assert tags["id"] == "s1"
    np.testing.assert_array_equal(state.parts[1], c)
    np.testing.assert_array_equal(tensors["last.output"], extra["last.output"])
    assert int.from_bytes(data[:8], "little") % 8 == 0  # the header is padded to 8 bytes


def test_an_empty_state_and_other_dtypes() -> None:
    state, _, _ = from_safetensors(to_safetensors(_state("float32", ())))
    assert state.parts == ()
    odd = {
        "last.output": np.arange(3, dtype=np.int16)
    }  # (a dtype the encoder leaves to safetensors)
    _, _, tensors = from_safetensors(to_safetensors(_state("float32", ()), None, odd))
    np.testing.assert_array_equal(tensors["last.output"], odd["last.output"])
