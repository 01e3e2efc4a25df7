"""Helpers every kind of test shares."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

NO_SERVERS = "RNN_SERVE_TESTS_START_NO_SERVERS"  # set by `make test-fast`


def may_start(what: str) -> None:
    """Called by everything in `tests/support` that starts a server process: under `make
    test-fast`, which promises none, the test that would start one fails, saying how to mark it
    (conftest marks a test from the fixtures it takes)."""
    if os.environ.get(NO_SERVERS):
        raise AssertionError(
            f"this test starts {what}, and make test-fast starts no server process: mark it "
            "(e2e, redis or s3), or take the fixture that marks it"
        )


def wait_until(predicate: Callable[[], object], timeout: float, every: float = 0.05) -> None:
    """Poll `predicate` until it is true; fail, saying so, once `timeout` seconds have passed.
    (An upper bound for an event to happen, never a measure of how fast it happened.)"""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not true within {timeout:g}s: {predicate}"
        time.sleep(every)


async def eventually(
    call: Callable[[], Awaitable[T]], ok: Callable[[T], object], within: float
) -> T:
    """Await `call()` until `ok` holds for what it gave, and give that; fail after `within`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        got = await call()
        if ok(got):
            return got
        assert loop.time() < deadline, f"never as expected within {within:g}s: {got!r}"
        await asyncio.sleep(0.05)


async def wait_for(predicate: Callable[[], Awaitable[object]], within: float) -> None:
    """`wait_until` for an async predicate, on the event loop (it yields between tries)."""
    await eventually(predicate, bool, within)
