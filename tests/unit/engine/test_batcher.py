"""The batcher's queue mechanics, with a fake runner in a real worker thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.catalog.spec import ModelSpec
from service.core.errors import NotReady, Overloaded, ShuttingDown
from service.core.metrics import Metrics
from service.core.schemas.config import RNNConfig
from service.engine.batcher import Batcher
from service.engine.job import ForwardJob, ForwardResult
from service.engine.tensor import WireTensor
from service.engine.worker import Worker
from service.http.problems import service_error_response, status_of

pytestmark = pytest.mark.anyio
CONFIG = RNNConfig(input_size=1, hidden_size=1)


def spec(name: str) -> ModelSpec:
    """A registered model's spec (the version is never looked at here)."""
    return ModelSpec(name, CONFIG, ((0, 0, 0), None))


def job(tag: float, batch: int = 1) -> ForwardJob:
    x = WireTensor(np.full((1, batch, 1), tag, dtype=np.float32), "float32", True)
    return ForwardJob(x, None, None, True, 1, batch)


class Runner:
    """Records the batches it is given; blocks while `gate` is clear."""

    def __init__(self) -> None:
        self.batches: list[list[float]] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, spec: ModelSpec, jobs: Sequence[ForwardJob]) -> list[ForwardResult]:
        self.gate.wait(10)
        self.batches.append([float(j.input.array.flat[0]) for j in jobs])
        return [ForwardResult(j.input.array, j.input.array) for j in jobs]


def make(runner: Runner, **kw: float) -> tuple[Batcher, Worker]:
    pool = Worker("test-worker")
    options = {
        "max_batch_sequences": 4,
        "max_wait_s": 0.0,
        "max_queue": 100,
        **kw,
    }
    b = Batcher(pool, runner, Metrics(), **options)  # type: ignore[arg-type]
    b.start()
    return b, pool


async def test_lone_request_runs_at_once_then_backlog_is_batched() -> None:
    runner = Runner()
    b, pool = make(runner)
    runner.gate.clear()
    first = asyncio.create_task(b.submit(spec("k"), job(0)))
    await asyncio.sleep(0.05)  # the lone request is already in the worker, not waiting
    rest = [asyncio.create_task(b.submit(spec("k"), job(i))) for i in range(1, 7)]
    await asyncio.sleep(0.05)
    runner.gate.set()
    results = await asyncio.gather(first, *rest)
    assert [float(r.output.flat[0]) for r in results] == [0, 1, 2, 3, 4, 5, 6]
    assert runner.batches == [[0.0], [1.0, 2.0, 3.0, 4.0], [5.0, 6.0]]  # max 4 sequences a batch
    await b.stop()
    pool.shutdown()


async def test_cancelled_caller_is_dropped() -> None:
    runner = Runner()
    b, pool = make(runner)
    runner.gate.clear()
    busy = asyncio.create_task(b.submit(spec("k"), job(0)))
    await asyncio.sleep(0.05)
    doomed = asyncio.create_task(b.submit(spec("k"), job(1)))
    kept = asyncio.create_task(b.submit(spec("k"), job(2)))
    await asyncio.sleep(0.01)
    doomed.cancel()
    runner.gate.set()
    await asyncio.gather(busy, kept)
    assert runner.batches == [[0.0], [2.0]]
    assert b.queued == 0
    await b.stop()
    pool.shutdown()


async def test_full_queue_and_a_cancelled_job_is_dropped() -> None:
    runner = Runner()
    b, pool = make(runner, max_queue=2)
    runner.gate.clear()
    busy = asyncio.create_task(b.submit(spec("k"), job(0)))
    await asyncio.sleep(0.02)
    waiting = [asyncio.create_task(b.submit(spec("k"), job(i))) for i in (1, 2)]
    await asyncio.sleep(0.01)
    with pytest.raises(Overloaded, match="RNN_SERVE_MAX_QUEUE"):
        await b.submit(spec("k"), job(3))
    waiting[0].cancel()  # what a deadline does: the data plane cancels the task serving it
    runner.gate.set()
    await busy
    with pytest.raises(asyncio.CancelledError):
        await waiting[0]
    await waiting[1]
    assert runner.batches == [[0.0], [2.0]]  # the cancelled job never ran
    await b.stop()
    pool.shutdown()


async def test_max_wait_gathers_company() -> None:
    runner = Runner()
    b, pool = make(runner, max_wait_s=0.2)
    tasks = []
    for i in range(3):
        tasks.append(asyncio.create_task(b.submit(spec("k"), job(i))))
        await asyncio.sleep(0.01)
    await asyncio.gather(*tasks)
    assert runner.batches == [[0.0, 1.0, 2.0]]
    await b.stop()
    pool.shutdown()


async def test_separate_keys_are_never_joined() -> None:
    runner = Runner()
    b, pool = make(runner)
    runner.gate.clear()
    first = asyncio.create_task(b.submit(spec("a"), job(0)))
    await asyncio.sleep(0.02)
    others = [asyncio.create_task(b.submit(spec(k), job(i))) for i, k in enumerate("abab", 1)]
    await asyncio.sleep(0.02)
    runner.gate.set()
    await asyncio.gather(first, *others)
    assert sorted(map(sorted, runner.batches)) == [[0.0], [1.0, 3.0], [2.0, 4.0]]
    await b.stop()
    pool.shutdown()


async def test_jobs_still_queued_at_shutdown_get_503_with_retry_after() -> None:
    runner = Runner()
    b, pool = make(runner)
    runner.gate.clear()
    busy = asyncio.create_task(b.submit(spec("k"), job(0)))
    await asyncio.sleep(0.02)
    queued = asyncio.create_task(b.submit(spec("k"), job(1)))
    await asyncio.sleep(0.01)
    await b.stop()
    with pytest.raises(ShuttingDown) as caught:
        await queued
    assert status_of(caught.value) == (503, "shutting-down")
    response = service_error_response(caught.value)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    runner.gate.set()
    busy.cancel()
    pool.shutdown()


async def test_models_take_turns_not_one_fifo() -> None:
    """A backlog of one model does not hold up another model's request: round robin."""
    runner = Runner()
    b, pool = make(runner, max_batch_sequences=1)
    runner.gate.clear()
    first = asyncio.create_task(b.submit(spec("a"), job(0)))
    await asyncio.sleep(0.02)
    backlog = [asyncio.create_task(b.submit(spec("a"), job(i))) for i in (1, 2, 3, 4)]
    await asyncio.sleep(0.01)
    other = asyncio.create_task(b.submit(spec("b"), job(9)))
    await asyncio.sleep(0.01)
    runner.gate.set()
    await asyncio.gather(first, *backlog, other)
    order = [batch[0] for batch in runner.batches]
    assert order.index(9.0) <= 2, order  # not behind all of a's backlog (it would be last)
    await b.stop()
    pool.shutdown()


async def test_a_build_runs_off_the_worker_while_built_models_forward() -> None:
    runner = Runner()
    built: set[str] = {"ready"}
    building, release = threading.Event(), threading.Event()

    def build(s: ModelSpec) -> None:
        building.set()
        release.wait(10)  # a big module, building until the test says
        built.add(s.name)

    builds = ThreadPoolExecutor(1)
    pool = Worker("test-worker")
    b = Batcher(pool, runner, Metrics(), max_batch_sequences=4, max_wait_s=0.0, max_queue=100,
                is_built=lambda s: s.name in built, build=build,
                build_executor=builds)  # fmt: skip
    b.start()
    slow = asyncio.create_task(b.submit(spec("new"), job(1)))
    await asyncio.sleep(0.05)
    assert building.is_set()
    for i in range(5):  # the built model answers while the other one is still building
        await b.submit(spec("ready"), job(10 + i))
    assert not slow.done()
    assert runner.batches == [[10.0 + i] for i in range(5)]
    release.set()
    await slow
    assert "new" in built
    assert runner.batches[-1] == [1.0]
    await b.stop()
    pool.shutdown()
    builds.shutdown()


async def test_a_failed_build_is_every_waiting_requests_answer() -> None:
    runner = Runner()

    def build(s: ModelSpec) -> None:
        raise NotReady("model 'broken' cannot be loaded from the repository: bad weights")

    builds, pool = ThreadPoolExecutor(1), Worker("test-worker")
    b = Batcher(pool, runner, Metrics(), max_batch_sequences=4, max_wait_s=0.0, max_queue=100,
                is_built=lambda s: False, build=build,
                build_executor=builds)  # fmt: skip
    b.start()
    waiting = [asyncio.create_task(b.submit(spec("broken"), job(i))) for i in range(3)]
    for task in waiting:
        with pytest.raises(NotReady, match="bad weights"):
            await task
    assert runner.batches == []
    assert b.queued == 0 or all(t.done() for t in waiting)
    await b.stop()
    pool.shutdown()
    builds.shutdown()
