"""run_batch joins jobs into one forward: each job's answer (and kept state) equals its own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.core.schemas.config import RNNConfig
from service.engine.build import build_seeded
from service.engine.job import ForwardJob
from service.engine.runner import run_batch, run_forward
from service.engine.tensor import WireTensor


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
