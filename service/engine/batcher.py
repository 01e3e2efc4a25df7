"""Dynamic batching: requests for the same model join one forward.

One dispatcher task on the event loop owns the queues; the forwards run in the engine's single
worker thread. While the worker is busy, requests accumulate; when it frees up, the next model's
queue in turn (round robin across models, first in first out within one) is taken, up to
`max_batch_sequences` sequences and `max_batch_macs` of work. So a lone request on an idle
device runs at once, under load every forward carries what arrived while the last one ran, and
no model's queue waits behind another's backlog. Long forwards come here as time slices
(`service.engine.slicing`), so no one holds the worker for long.

A model whose module is not built yet is built on a thread of its own, not the worker: its
queue waits, and the other models' forwards go on meanwhile.

Requests are validated before they get here, so one bad request cannot fail a batch; a caller
that gave up (its task cancelled: the data plane's deadline, a client gone) is dropped, which is
how a deadline reaches the engine; a full queue refuses with 429. Each result says how long its
job waited and computed: the data plane observes the stage timers from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

from service.catalog.spec import ModelSpec
from service.core.errors import ShuttingDown
from service.core.limits import queue_full
from service.core.metrics import Metrics
from service.engine.job import ForwardJob, ForwardResult
from service.engine.worker import Worker

BatchRunner = Callable[[ModelSpec, Sequence[ForwardJob]], list[ForwardResult]]
Builder = Callable[[ModelSpec], object]  # builds (and caches) the model's module


@dataclass(eq=False, slots=True)
class _Pending:
    job: ForwardJob
    future: asyncio.Future[ForwardResult]
    enqueued: float


@dataclass(eq=False)
class _Queue:
    spec: ModelSpec
    items: deque[_Pending] = field(default_factory=deque)
    building: bool = False  # its module is being built on the build thread


class Batcher:
    def __init__(
        self,
        worker: Worker,
        run: BatchRunner,
        metrics: Metrics,
        *,
        max_batch_sequences: int,
        max_wait_s: float,
        max_queue: int,
        max_batch_macs: float = float("inf"),
        is_built: Callable[[ModelSpec], bool] | None = None,
        build: Builder | None = None,
        build_executor: Executor | None = None,
    ) -> None:
        self._worker = worker
        self._run = run
        self._metrics = metrics
        self.max_batch_sequences = max_batch_sequences
        self.max_batch_macs = max_batch_macs
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._is_built = is_built
        self._build = build
        self._build_executor = build_executor
        self._queues: dict[Hashable, _Queue] = {}  # in turn order: served ones move to the back
        self._queued = 0
        self._depth = metrics.queue_depth
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        return self._queued

    def start(self) -> None:
        self._task = asyncio.create_task(self._dispatch(), name="rnn-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for queue in self._queues.values():
            for p in queue.items:
                if not p.future.done():
                    p.future.set_exception(
                        ShuttingDown("the server is shutting down; retry on another replica")
                    )
        self._queues.clear()

    async def submit(self, spec: ModelSpec, job: ForwardJob) -> ForwardResult:
        if self._queued >= self.max_queue:
            raise queue_full(self.max_queue)
        queue = self._queues.get(spec.key)
        if queue is None:
            queue = self._queues[spec.key] = _Queue(spec)
        future: asyncio.Future[ForwardResult] = asyncio.get_running_loop().create_future()
        queue.items.append(_Pending(job, future, time.perf_counter()))
        self._queued += 1
        self._depth.set(self._queued)
        self._wakeup.set()
        return await future  # cancelling the caller cancels `future`: the dispatcher drops it

    # --- the dispatcher -----------------------------------------------------------------------
    async def _dispatch(self) -> None:
        while True:
            await self._wakeup.wait()
            picked = self._next()
            if picked is None:
                self._wakeup.clear()
                continue
            key, queue = picked
            if self.max_wait_s > 0:
                await self._wait_for_company(queue)
            batch = self._take(key, queue)
            if not batch:
                continue
            started = time.perf_counter()
            jobs = [p.job for p in batch]
            try:
                results = await self._worker.call(self._run, queue.spec, jobs)
            except Exception as exc:  # the model's failure is every member's (e.g. OOM, deleted)
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            self._metrics.batch_size.observe(sum(j.batch for j in jobs))
            computed = time.perf_counter() - started
            for p, result in zip(batch, results, strict=True):
                result.queue_s, result.compute_s = started - p.enqueued, computed
                if not p.future.done():
                    p.future.set_result(result)

    def _next(self) -> tuple[Hashable, _Queue] | None:
        """The next model's queue in turn whose module is built (starting the builds of those
        whose is not), moved to the back of the turn order."""
        for key, queue in list(self._queues.items()):
            self._drop_dead(queue)
            if not queue.items:
                del self._queues[key]
                continue
            if queue.building:
                continue
            if self._is_built is not None and not self._is_built(queue.spec):
                self._start_build(queue)
                continue
            del self._queues[key]  # to the back: the other models' queues come first next time
            self._queues[key] = queue
            return key, queue
        return None

    def _start_build(self, queue: _Queue) -> None:
        assert self._build is not None
        assert self._build_executor is not None
        queue.building = True
        done = asyncio.wrap_future(self._build_executor.submit(self._build, queue.spec))

        def built(future: asyncio.Future[object]) -> None:
            queue.building = False
            failure = None if future.cancelled() else future.exception()
            if failure is not None:  # e.g. unreadable weights: every waiting request's answer
                for p in queue.items:
                    if not p.future.done():
                        p.future.set_exception(failure)
            self._wakeup.set()

        done.add_done_callback(built)

    async def _wait_for_company(self, queue: _Queue) -> None:
        """With max_wait > 0, let a small batch wait (at most that long) for more requests."""
        while queue.items and sum(p.job.batch for p in queue.items) < self.max_batch_sequences:
            remaining = queue.items[0].enqueued + self.max_wait_s - time.perf_counter()
            if remaining <= 0:
                return
            await asyncio.sleep(min(remaining, 0.001))

    def _take(self, key: Hashable, queue: _Queue) -> list[_Pending]:
        batch: list[_Pending] = []
        sequences, macs = 0, 0
        while queue.items:
            head = queue.items[0]
            if head.future.done():  # cancelled by its caller
                queue.items.popleft()
                self._queued -= 1
                continue
            head_macs = head.job.steps() * queue.spec.config.step_macs()
            if batch and (
                sequences + head.job.batch > self.max_batch_sequences
                or macs + head_macs > self.max_batch_macs
            ):
                break
            batch.append(queue.items.popleft())
            self._queued -= 1
            sequences += head.job.batch
            macs += head_macs
        if not queue.items:
            self._queues.pop(key, None)
        self._depth.set(self._queued)
        return batch

    def _drop_dead(self, queue: _Queue) -> None:
        while queue.items and queue.items[0].future.done():
            queue.items.popleft()
            self._queued -= 1
