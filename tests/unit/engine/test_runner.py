"""run_batch joins jobs into one forward: each job's answer (and kept state) equals its own."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core.schemas.config import RNNConfig
from service.engine import runner
from service.engine.build import build_seeded
from service.engine.job import ForwardJob
from service.engine.runner import run_batch, run_forward
from service.engine.tensor import WireTensor, bf16_bits_to_f32, cast_numbers
from tests.support.strategies import layered_configs


def _values(arr: np.ndarray[Any, Any], cfg: RNNConfig) -> np.ndarray[Any, Any]:
    """An answer's values as float64 (bfloat16 arrives as its bit patterns)."""
    return (bf16_bits_to_f32(arr) if cfg.dtype == "bfloat16" else arr).astype(np.float64)


@pytest.mark.parametrize("batch_first", [False, True])
def test_mixed_jobs_with_h0_state_and_lengths(batch_first: bool) -> None:
    cfg = RNNConfig(input_size=4, hidden_size=6, num_layers=2, batch_first=batch_first)
    module = build_seeded(cfg, torch.device("cpu"))
    rng = np.random.default_rng(0)

    def x(seq: int, n: int | None) -> WireTensor:
        shape = (seq, 4) if n is None else ((n, seq, 4) if batch_first else (seq, n, 4))
        return WireTensor(rng.standard_normal(shape).astype(np.float32), "float32", True)

    h0 = WireTensor(rng.standard_normal((2, 2, 6)).astype(np.float32), "float32", True)
    jobs = [
        ForwardJob(x(5, 2), (h0,), None, True, 5, 2),
        ForwardJob(x(3, 1), None, None, True, 3, 1, state=(torch.randn(2, 1, 6),), keep_state=True),
        ForwardJob(
            x(4, None), None, None, False, 4, 1, state=(torch.randn(2, 6),), keep_state=True
        ),
        ForwardJob(x(5, 3), None, (5, 2, 4), True, 5, 3),
    ]
    joined = run_batch(module, cfg, jobs)
    for job, got in zip(jobs, joined, strict=True):
        alone = run_forward(module, cfg, job)
        np.testing.assert_allclose(got.output, alone.output, atol=1e-6)
        np.testing.assert_allclose(got.h_n, alone.h_n, atol=1e-6)
        if job.keep_state:
            assert got.state is not None
            assert alone.state is not None
            torch.testing.assert_close(got.state, alone.state, atol=1e-6, rtol=0)
            assert job.state is not None
            assert [p.shape for p in got.state] == [p.shape for p in job.state]
        else:
            assert got.state is None


Job = tuple[int, int, bool, bool, bool, bool]  # n, L, batched, lengths, with h0, keeps state


@st.composite
def batches(draw: st.DrawFn) -> tuple[RNNConfig, list[Job]]:
    """A config with or without layers around its core, and the jobs of one batch: each with
    its own sequences and length, batched or not, with `lengths` or not, with an initial state
    or not, keeping its final state (a session's chunk) or not."""
    config = draw(layered_configs())
    job = st.tuples(st.integers(1, 3), st.integers(1, 5), st.booleans(), st.booleans(),
                    st.booleans(), st.booleans())  # fmt: skip
    return RNNConfig.model_validate(config), draw(st.lists(job, min_size=2, max_size=5))


@given(batches(), st.integers(0, 2**32 - 1))
@settings(max_examples=80, deadline=None)
def test_jobs_joined_in_one_forward_each_equal_their_own_forward(
    drawn: tuple[RNNConfig, list[Job]], seed: int
) -> None:
    cfg, specs = drawn
    module = build_seeded(cfg, torch.device("cpu"))
    rng = np.random.default_rng(seed)

    def tensor(shape: tuple[int, ...]) -> WireTensor:
        values = rng.standard_normal(shape)
        return WireTensor(cast_numbers(values, cfg.dtype, ("x",)), cfg.dtype, True)

    jobs = []
    for n, seq_len, batched, with_lengths, with_state, keep in specs:
        rows: tuple[int, ...] = (n,) if batched else ()
        steps: tuple[int, ...] = (seq_len,)
        dims = (*rows, *steps) if cfg.batch_first else (*steps, *rows)
        if cfg.embedding is not None:
            x = WireTensor(rng.integers(0, cfg.embedding.num_embeddings, dims), "int64", True)
        else:
            x = tensor((*dims, cfg.input_size))
        state0 = (
            tuple(tensor((cfg.state_rows, *rows, size)) for size in cfg.state_sizes)
            if with_state
            else None
        )
        lengths = None
        if batched and with_lengths:
            lengths = tuple(int(k) for k in rng.integers(1, seq_len + 1, n))
        batch = n if batched else 1
        jobs.append(ForwardJob(x, state0, lengths, batched, seq_len, batch, keep_state=keep))
    joined = runner.run_batch(module, cfg, jobs)
    tolerance = 1e-2 if cfg.dtype in ("bfloat16", "float16") else 1e-5
    for job, got in zip(jobs, joined, strict=True):
        alone = runner.run_forward(module, cfg, job)
        for mine, expected in ((got.output, alone.output), (got.h_n, alone.h_n),
                               (got.c_n, alone.c_n), (got.head, alone.head)):  # fmt: skip
            if expected is None:
                assert mine is None
                continue
            assert mine is not None
            assert mine.shape == expected.shape
            assert mine.flags.c_contiguous
            np.testing.assert_allclose(
                _values(mine, cfg), _values(expected, cfg), atol=tolerance, rtol=tolerance
            )
        assert (got.state is None) == (not job.keep_state)
        if got.state is not None and alone.state is not None:
            for mine_t, expected_t in zip(got.state, alone.state, strict=True):
                assert mine_t.shape == expected_t.shape
                torch.testing.assert_close(mine_t, expected_t, atol=tolerance, rtol=tolerance)
