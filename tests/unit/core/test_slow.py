"""SlowRequests: callbacks for the requests still in flight after `after_s`, and only for them,
each once, from one timer. On an event loop whose clock the test moves (no wall-clock time)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator

import pytest

from service.core.slow import SlowRequests


class ManualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose time() is what the test says: timers fire as the test moves it."""

    now = 1000.0

    def time(self) -> float:
        return self.now


@pytest.fixture
def loop() -> Iterator[ManualClockLoop]:
    manual = ManualClockLoop()
    yield manual
    manual.close()


def advance(loop: ManualClockLoop, seconds: float, step: float = 0.001) -> None:
    """Move the clock by `seconds`, a step at a time, running what falls due at each."""
    end = loop.now + seconds
    while loop.now < end - 1e-12:
        loop.now = min(end, loop.now + step)
        loop.run_until_complete(asyncio.sleep(0))


def test_only_requests_still_in_flight_are_called_once(loop: ManualClockLoop) -> None:
    slow = SlowRequests(0.05)
    called: list[str] = []

    async def start() -> None:
        quick = slow.enter(lambda: called.append("quick"))
        slow.enter(lambda: called.append("slow"))
        slow.leave(quick)  # answered within after_s

    loop.run_until_complete(start())
    advance(loop, 0.049)
    assert called == []  # not yet
    advance(loop, 0.002)
    assert called == ["slow"]
    advance(loop, 0.5)
    assert called == ["slow"]  # once


def test_later_entries_are_called_in_turn_and_the_timer_stops(loop: ManualClockLoop) -> None:
    slow = SlowRequests(0.03, granularity_s=0.005)
    fired: dict[int, float] = {}
    entered: dict[int, float] = {}

    def fire(i: int) -> None:
        fired[i] = loop.time()

    async def enter(i: int) -> None:
        entered[i] = loop.time()
        slow.enter(functools.partial(fire, i))

    for i in range(5):
        loop.run_until_complete(enter(i))
        advance(loop, 0.01)
    advance(loop, 0.1)
    assert sorted(fired) == list(range(5))
    for i in range(5):  # after its after_s, within one granularity (and one step of the clock)
        assert 0.03 <= fired[i] - entered[i] <= 0.03 + 0.005 + 0.001 + 1e-9, i
    assert slow._handle is None  # nothing in flight: no timer left armed
