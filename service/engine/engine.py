"""The engine: one dedicated worker thread runs every forward (never the event loop), fed by
the dynamic batcher."""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from service.engine.batcher import Batcher, ModuleSource
from service.engine.codec import WireTensor, cast_numbers
from service.engine.runner import ForwardResult, run_batch
from service.engine.validate import ForwardJob
from service.errors import DeviceOutOfMemory
from service.metrics import Metrics
from service.schemas.config import RNNConfig
from service.settings import Settings

__all__ = ["Engine", "ModuleSource"]


class Engine:
    """Owns the worker thread and the batcher; `forward` is awaited from request handlers."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._metrics = metrics
        # torch's intra-op threads are process-wide: set once in configure_torch().
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rnn-engine")
        self.batcher = Batcher(
            self._executor,
            self._run,
            metrics,
            max_batch_sequences=settings.max_batch_sequences,
            max_wait_s=settings.max_batch_wait_ms / 1000,
            max_queue=settings.max_queue,
            timeout_s=settings.request_timeout_s,
        )

    def start(self) -> None:
        self.batcher.start()

    async def forward(
        self, key: Hashable, source: ModuleSource, config: RNNConfig, job: ForwardJob
    ) -> ForwardResult:
        """Run `job` on the module `source` yields (built in the worker if need be).

        Jobs with the same `key` (the same module and config) may be batched together.
        """
        return await self.batcher.submit(key, source, config, job)

    def _run(
        self, source: ModuleSource, config: RNNConfig, jobs: Sequence[ForwardJob]
    ) -> list[ForwardResult]:
        """In the worker thread: get the module, run the jobs as one forward."""
        started = time.perf_counter()
        try:
            results = run_batch(source(), config, jobs)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            raise DeviceOutOfMemory(
                "the device ran out of memory for this request; send fewer or shorter sequences"
            ) from None
        self._metrics.stages.compute.observe(time.perf_counter() - started)
        self._metrics.timesteps.inc(
            sum(sum(j.lengths) if j.lengths else j.seq_len * j.batch for j in jobs)
        )
        return results

    async def warmup(self, key: Hashable, source: ModuleSource, config: RNNConfig) -> None:
        """Build the module and run one tiny forward, so the first real request is fast."""
        x = np.zeros((1, config.input_size))
        wire = WireTensor(cast_numbers(x, config.dtype, ("warmup",)), config.dtype, False)
        await self.forward(key, source, config, ForwardJob(wire, None, None, False, 1, 1))

    async def close(self) -> None:
        await self.batcher.stop()
        self._executor.shutdown(wait=True, cancel_futures=True)
