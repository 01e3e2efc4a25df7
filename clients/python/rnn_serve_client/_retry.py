"""Retries (tenacity): which answers are retried, how long to wait, and the policy both clients
share."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping
from typing import Any

import httpx
from tenacity import (
    RetryCallState,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
)


class _Wait:
    """tenacity's wait: the answer's Retry-After if it has one (at most 30 s), else exponential
    backoff with jitter."""

    def __init__(self, backoff: float) -> None:
        self.backoff = backoff

    def __call__(self, state: RetryCallState) -> float:
        outcome = state.outcome
        if outcome is not None and not outcome.failed:
            retry_after = outcome.result().headers.get("retry-after")
            if retry_after is not None:
                try:
                    return min(float(retry_after), 30.0)
                except ValueError:
                    pass
        attempt = state.attempt_number - 1
        return float(self.backoff * 2**attempt * (0.5 + random.random() / 2))


def _sleep(seconds: float) -> None:
    time.sleep(seconds)  # looked up at each call: tests replace time.sleep


async def _asleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


def _last(state: RetryCallState) -> Any:
    """Out of tries: the last answer (its error is raised by its status), or its exception."""
    assert state.outcome is not None
    return state.outcome.result()


# What is retried: connection errors (nothing was answered; every call here may be sent again:
# forwards have no side effects, registrations and uploads are idempotent) and these statuses.
_BUSY = (429, 503)
_RESEND = (429, 502, 503, 504)


class _Base:
    def __init__(self, retries: int, backoff: float, stream_retries: int = 8) -> None:
        self.retries = retries
        self.backoff = backoff
        # session chunks are resent more patiently: a replica restarting, or the session
        # store failing over, takes seconds
        self.stream_retries = stream_retries

    def _policy(self, resend: bool) -> dict[str, Any]:
        statuses = _RESEND if resend else _BUSY
        attempts = (self.stream_retries if resend else self.retries) + 1
        return {
            "stop": stop_after_attempt(attempts),
            "retry": retry_if_exception_type(httpx.TransportError)
            | retry_if_result(lambda r: r.status_code in statuses),
            "wait": _Wait(self.backoff),
            "retry_error_callback": _last,
        }


def _headers(api_key: str | None, headers: Mapping[str, str] | None) -> dict[str, str]:
    """The headers every call carries: the API key, and any the caller adds."""
    out = dict(headers or {})
    if api_key is not None:
        out["Authorization"] = f"Bearer {api_key}"
    return out
