"""What every request leaves behind: its count and latency by route template and status, and
its access-log line (with the model, sequences and batch of a forward)."""

from __future__ import annotations

import time
from typing import Any

from starlette.types import Scope

from service.core.logs import ACCESS
from service.core.metrics import Metrics


class Recorder:
    """Metric children bound once per (method, route, status) and per route."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._latencies: dict[str, Any] = {}

    def __call__(
        self, scope: Scope, *, method: str, route: str, status: int, start: float, rid: str
    ) -> None:
        elapsed = time.perf_counter() - start
        counter = self._counters.get((method, route, status))
        if counter is None:
            counter = self.metrics.requests.labels("http", method, route, str(status))
            self._counters[(method, route, status)] = counter
        counter.inc()
        latency = self._latencies.get(route)
        if latency is None:
            latency = self._latencies[route] = self.metrics.request_seconds.labels("http", route)
        latency.observe(elapsed)
        if ACCESS.enabled():
            ACCESS.write({
                "request_id": rid, "method": method, "path": scope["path"], "status": status,
                "duration_ms": round(elapsed * 1e3, 3),
                **scope.get("log_fields", {}),  # model, sequences, batch (forwards)
            })  # fmt: skip
