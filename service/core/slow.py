"""One timer for every request in flight, instead of one (or two) each.

Most forwards are answered within milliseconds; only the ones still running after `after_s`
need anything done about time — their connection watched (a client that leaves cancels its
work), their deadline armed. Arming a timer per request for that cost ~5% of a small forward's
CPU (callgrind: +40-60k instructions a request for two timers). Here a request only enters a
queue (an append) and leaves it (a dict pop); one timer per `granularity_s` at most takes the
requests that have been in flight for `after_s` and calls their callbacks — so only slow requests
pay for timers, and they are the ones that need them.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable


class SlowRequests:
    def __init__(self, after_s: float, granularity_s: float = 0.01) -> None:
        self.after_s = after_s
        self.granularity_s = granularity_s
        self._due: deque[tuple[float, int]] = deque()  # (when, key), in order of entry
        self._live: dict[int, Callable[[], None]] = {}
        self._keys = itertools.count().__next__
        self._handle: asyncio.TimerHandle | None = None

    def enter(self, callback: Callable[[], None]) -> int:
        """Call `callback` (once, on the event loop) if the caller is still in flight after
        `after_s`; returns the key that `leave` takes."""
        loop = asyncio.get_running_loop()
        key = self._keys()
        self._due.append((loop.time() + self.after_s, key))
        self._live[key] = callback
        if self._handle is None:
            self._handle = loop.call_later(self.after_s, self._tick)
        return key

    def leave(self, key: int) -> None:
        self._live.pop(key, None)

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        due, live = self._due, self._live
        while due and due[0][0] <= now:
            callback = live.pop(due.popleft()[1], None)
            if callback is not None:
                callback()
        while due and due[0][1] not in live:  # those that left: no need to wake for them
            due.popleft()
        self._handle = (
            loop.call_at(max(due[0][0], now + self.granularity_s), self._tick) if due else None
        )
