"""The engine: runs forwards in one dedicated worker thread, never on the event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import nn

from service.engine.codec import WireTensor, cast_numbers
from service.engine.runner import ForwardResult, run_forward
from service.engine.validate import ForwardJob
from service.errors import DeviceOutOfMemory
from service.metrics import Metrics
from service.schemas.config import RNNConfig

ModuleSource = Callable[[], nn.RNN]


class Engine:
    """Owns the worker thread; `forward` is awaited from request handlers."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rnn-engine")

    async def forward(
        self, source: ModuleSource, config: RNNConfig, job: ForwardJob
    ) -> ForwardResult:
        """Run `job` on the module `source` yields (built in the worker if need be)."""
        queued = time.perf_counter()
        future = self._executor.submit(self._run, source, config, job, queued)
        return await asyncio.wrap_future(future)

    def _run(
        self, source: ModuleSource, config: RNNConfig, job: ForwardJob, queued: float
    ) -> ForwardResult:
        started = time.perf_counter()
        self._metrics.stage_seconds.labels("queue").observe(started - queued)
        try:
            result = run_forward(source(), config, job)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            raise DeviceOutOfMemory(
                "the device ran out of memory for this request; send fewer or shorter sequences"
            ) from None
        self._metrics.stage_seconds.labels("compute").observe(time.perf_counter() - started)
        self._metrics.batch_size.observe(job.batch)
        self._metrics.timesteps.inc(sum(job.lengths) if job.lengths else job.seq_len * job.batch)
        return result

    async def warmup(self, source: ModuleSource, config: RNNConfig) -> None:
        """Build the module and run one tiny forward, so the first real request is fast."""
        x = np.zeros((1, config.input_size))
        wire = WireTensor(cast_numbers(x, config.dtype, ("warmup",)), config.dtype, False)
        await self.forward(source, config, ForwardJob(wire, None, None, False, 1, 1))

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
