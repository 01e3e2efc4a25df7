"""SlowRequests: callbacks for the requests still in flight after `after_s`, and only for them,
each once, from one timer."""

from __future__ import annotations

import asyncio
import functools

import pytest

from service.core.slow import SlowRequests

pytestmark = pytest.mark.anyio


async def test_only_requests_still_in_flight_are_called_once(anyio_backend: str) -> None:
    slow = SlowRequests(0.05)
    called: list[str] = []
    quick = slow.enter(lambda: called.append("quick"))
    slow.enter(lambda: called.append("slow"))
    slow.leave(quick)  # answered within after_s
    await asyncio.sleep(0.02)
    assert called == []  # not yet
    await asyncio.sleep(0.1)
    assert called == ["slow"]
    await asyncio.sleep(0.1)
    assert called == ["slow"]  # once


async def test_later_entries_are_called_in_turn_and_the_timer_stops(anyio_backend: str) -> None:
    slow = SlowRequests(0.03, granularity_s=0.005)
    loop = asyncio.get_running_loop()
    fired: dict[int, float] = {}
    entered: dict[int, float] = {}

    def fire(i: int) -> None:
        fired[i] = loop.time()

    for i in range(5):
        entered[i] = loop.time()
        slow.enter(functools.partial(fire, i))
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    assert sorted(fired) == list(range(5))
    for i in range(5):
        assert 0.03 <= fired[i] - entered[i] < 0.03 + 0.05, (i, fired[i] - entered[i])
    assert slow._handle is None  # nothing in flight: no timer left armed
