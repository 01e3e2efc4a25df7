"""Helpers every kind of test shares."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(predicate: Callable[[], object], timeout: float, every: float = 0.05) -> None:
    """Poll `predicate` until it is true; fail, saying so, once `timeout` seconds have passed.
    (An upper bound for an event to happen, never a measure of how fast it happened.)"""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not true within {timeout:g}s: {predicate}"
        time.sleep(every)
