"""Waiting for an outcome that matters more than the waiter's cancellation.

A session chunk's commit, once sent to the store, lands or not whatever happens to the request
that sent it: a deadline or a client gone must not make the answer say "nothing changed" when
the change landed. These helpers wait for such an outcome through cancellations, and let the
caller withdraw them when it carries on.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def outlive_cancellation(future: asyncio.Future[Any]) -> int:
    """Wait until `future` is done, even if the waiting task is cancelled meanwhile (the
    future itself is never cancelled by it); how many cancellations arrived."""
    cancels = 0
    while not future.done():
        try:
            await asyncio.wait((future,))
        except asyncio.CancelledError:
            cancels += 1
    return cancels


def withdraw_cancellation(cancels: int) -> None:
    """The current task carries on after `cancels` cancellations it outlived."""
    task = asyncio.current_task()
    if task is not None:
        for _ in range(cancels):
            task.uncancel()
