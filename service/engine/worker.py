"""The engine's worker: one thread that runs the event loop's calls in order, off the loop.

A forward's round trip from the loop to this thread and back is two wake-ups: the thread's (a
queue put) and the loop's (`call_soon_threadsafe`). A `ThreadPoolExecutor` with
`asyncio.wrap_future` adds a concurrent future, its condition lock and callback chain, and the
pool's thread accounting on every submit: a no-op's round trip measured 56 µs of CPU that way
against 12-21 µs this way (`bench/MEASURED.md`). Forwards are batched, so this is paid once a
batch, and every lone request on an idle device pays it whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Call = tuple[Callable[..., Any], tuple[Any, ...], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():  # its caller may have given up meanwhile
        future.set_result(result)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _run(
    fn: Callable[..., Any], args: tuple[Any, ...], loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
) -> None:  # fmt: skip
    if future.done():  # cancelled while it waited
        return
    try:
        result = fn(*args)
    except BaseException as exc:  # the caller's to handle, whatever it is
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(_fail, future, exc)
        return
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_settle, future, result)


class Worker:
    """Runs `await worker.call(fn, *args)` on its one thread, first come first served; a call
    whose caller was cancelled before it started is skipped."""

    def __init__(self, name: str, initializer: Callable[[], object] | None = None) -> None:
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._initializer = initializer
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()
        self._closed = False

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise RuntimeError("the worker is shut down")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((fn, args, loop, future))
        return await future

    def _serve(self) -> None:
        if self._initializer is not None:
            self._initializer()
        while (item := self._queue.get()) is not None:
            _run(*item)
            item = None  # hold nothing while idle

    def shutdown(self, wait: bool = True) -> None:
        """Let the calls already queued finish, then stop the thread."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
        if wait and self._thread is not threading.current_thread():
            self._thread.join()
