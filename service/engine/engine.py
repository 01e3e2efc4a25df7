"""The engine: one dedicated worker thread runs every forward (never the event loop), fed by
the dynamic batcher."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import nn

from service.catalog.spec import ModelSpec
from service.core.errors import DeviceOutOfMemory
from service.core.metrics import Metrics, model_label
from service.core.settings import Settings
from service.engine.batcher import Batcher
from service.engine.job import ForwardJob, ForwardResult
from service.engine.runner import run_batch
from service.engine.slicing import run_sliced, slice_steps
from service.engine.tensor import WireTensor, cast_numbers
from service.engine.worker import Worker

__all__ = ["Engine"]

Modules = Callable[[ModelSpec], nn.Module]
IsBuilt = Callable[[ModelSpec], bool]


def _out_of_memory(exc: RuntimeError) -> bool:
    text = str(exc)
    return "can't allocate memory" in text or "out of memory" in text.lower()


class Engine:
    """Owns the worker thread and the batcher; `forward` is awaited by the data plane.

    `modules` maps a model's spec to its built module (the module cache's `module_for`); it is
    called in the worker thread, so builds and loads never run on the event loop.
    """

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        modules: Modules,
        is_built: IsBuilt | None = None,
    ) -> None:
        self._metrics = metrics
        self._modules = modules
        self._slice_macs = settings.slice_macs
        self._cuda: torch.device | None = None  # set by `serve_on` when the device is a GPU
        # torch's intra-op thread count (configure_torch) is OpenMP's, which is per thread: a
        # thread that never sets it runs with one OpenMP thread per core, and the extra ones
        # spin-wait after every forward — 60% of the server's CPU in libgomp under real-time
        # streams (perf), 2.5x the CPU a chunk needs. Each torch thread sets it first.
        threads = torch.get_num_threads()
        self._worker = Worker("rnn-engine", functools.partial(torch.set_num_threads, threads))
        # Builds and loads run here, never on the worker: forwards of built models go on.
        self._builds = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="rnn-build",
            initializer=torch.set_num_threads, initargs=(threads,),
        )  # fmt: skip
        self.batcher = Batcher(
            self._worker,
            self._run,
            metrics,
            max_batch_sequences=settings.max_batch_sequences,
            max_batch_macs=2 * settings.slice_macs,
            max_wait_s=settings.max_batch_wait_ms / 1000,
            max_queue=settings.max_queue,
            is_built=is_built,
            build=modules,
            build_executor=self._builds,
        )

    def serve_on(self, device: torch.device) -> None:
        self._cuda = device if device.type == "cuda" else None

    def start(self) -> None:
        self.batcher.start()

    async def forward(self, spec: ModelSpec, job: ForwardJob) -> ForwardResult:
        """Run `job` on the model `spec` describes; jobs with the same `spec.key` may share a
        forward. A long unidirectional job runs in time slices (`service.engine.slicing`), so
        that it never holds the device for long."""
        if spec.config.sliceable:
            steps = slice_steps(spec.config, job, self._slice_macs)
            if steps < job.seq_len:
                return await run_sliced(
                    spec.config, job, steps, functools.partial(self.batcher.submit, spec)
                )
        return await self.batcher.submit(spec, job)

    def _run(self, spec: ModelSpec, jobs: Sequence[ForwardJob]) -> list[ForwardResult]:
        """In the worker thread: get the module, run the jobs as one forward."""
        try:
            results = run_batch(self._modules(spec), spec.config, jobs)
        except (torch.OutOfMemoryError, MemoryError, RuntimeError) as exc:
            # CUDA's allocator raises OutOfMemoryError; the CPU's, a RuntimeError ("can't
            # allocate memory") or MemoryError. Anything else is a bug: let it through.
            if isinstance(exc, RuntimeError) and not _out_of_memory(exc):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            raise DeviceOutOfMemory(
                "the device ran out of memory for this forward; send fewer or shorter sequences"
            ) from None
        self._metrics.executions.labels(model_label(spec.name, spec.inline)).inc()
        if self._cuda is not None:
            self._metrics.device_memory.set(torch.cuda.memory_allocated(self._cuda))
        self._metrics.timesteps.inc(sum(j.steps() for j in jobs))
        return results

    async def warmup(self, spec: ModelSpec) -> None:
        """Build the module and run one tiny forward, so the first real request is fast."""
        config = spec.config
        if config.ids:  # one token id
            wire = WireTensor(np.zeros((1,), dtype=np.int64), "int64", False)
        else:
            x = np.zeros((1, config.input_size))
            wire = WireTensor(cast_numbers(x, config.dtype, ("warmup",)), config.dtype, False)
        await self.forward(spec, ForwardJob(wire, None, None, False, 1, 1))

    async def close(self) -> None:
        await self.batcher.stop()
        self._worker.shutdown()
        self._builds.shutdown(wait=True, cancel_futures=True)
