"""Hypothesis strategies the suites share."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

ACTIVATIONS = ("none", "softmax", "log_softmax", "sigmoid", "tanh")


@st.composite
def layered_configs(draw: st.DrawFn) -> dict[str, Any]:
    mode = draw(st.sampled_from(["RNN", "LSTM", "GRU"]))
    hidden = draw(st.integers(2, 5))
    config: dict[str, Any] = {
        "mode": mode, "input_size": draw(st.integers(1, 4)), "hidden_size": hidden,
        "num_layers": draw(st.integers(1, 2)), "bias": draw(st.booleans()),
        "batch_first": draw(st.booleans()), "bidirectional": draw(st.booleans()),
        "seed": draw(st.integers(0, 1000)),
        "dtype": draw(st.sampled_from(["float32", "float64", "float32", "bfloat16", "float16"])),
    }  # fmt: skip
    if mode == "LSTM" and draw(st.booleans()):
        config["proj_size"] = draw(st.integers(1, hidden - 1))
    if draw(st.booleans()):
        config["embedding"] = {"num_embeddings": draw(st.integers(1, 12))}
    if draw(st.booleans()) or "embedding" not in config:
        config["head"] = {
            "out_features": draw(st.integers(1, 4)), "bias": draw(st.booleans()),
            "activation": draw(st.sampled_from(ACTIVATIONS)),
            "on": draw(st.sampled_from(["every_step", "last_step"])),
        }  # fmt: skip
    return config
