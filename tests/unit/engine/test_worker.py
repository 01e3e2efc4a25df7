"""The engine's worker thread: calls run in order off the loop, answers and failures come back,
a call whose caller gave up before it started is skipped, and shutdown lets queued calls end."""

from __future__ import annotations

import asyncio
import threading

import pytest

from service.engine.worker import Worker

pytestmark = pytest.mark.anyio


async def test_calls_run_on_the_worker_thread_in_order() -> None:
    worker = Worker("test-worker")
    seen: list[tuple[int, str]] = []

    def work(i: int) -> int:
        seen.append((i, threading.current_thread().name))
        return i * i

    assert await asyncio.gather(*(worker.call(work, i) for i in range(5))) == [0, 1, 4, 9, 16]
    assert seen == [(i, "test-worker") for i in range(5)]
    worker.shutdown()


async def test_a_failure_is_the_callers() -> None:
    worker = Worker("test-worker")

    def boom() -> None:
        raise MemoryError("out of memory")

    with pytest.raises(MemoryError, match="out of memory"):
        await worker.call(boom)
    assert await worker.call(lambda: "still serving") == "still serving"
    worker.shutdown()


async def test_a_cancelled_call_that_has_not_started_is_skipped() -> None:
    worker = Worker("test-worker")
    gate, ran = threading.Event(), list[str]()
    first = asyncio.create_task(worker.call(gate.wait, 10))
    await asyncio.sleep(0.02)
    second = asyncio.create_task(worker.call(ran.append, "second"))
    await asyncio.sleep(0.02)
    second.cancel()
    gate.set()
    assert await first is True
    with pytest.raises(asyncio.CancelledError):
        await second
    await worker.call(ran.append, "third")
    assert ran == ["third"]
    worker.shutdown()


async def test_shutdown_finishes_what_is_queued_then_refuses() -> None:
    worker = Worker("test-worker")
    done: list[int] = []
    tasks = [asyncio.create_task(worker.call(done.append, i)) for i in range(3)]
    await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    worker.shutdown()
    assert done == [0, 1, 2]
    with pytest.raises(RuntimeError, match="shut down"):
        await worker.call(done.append, 4)


def test_the_initializer_runs_on_the_thread_first() -> None:
    names: list[str] = []
    worker = Worker("init-worker", lambda: names.append(threading.current_thread().name))
    worker.shutdown()
    assert names == ["init-worker"]
