"""What every request leaves behind: its count and latency by route template and status, and
its access-log line (with the model, sequences and batch of a forward)."""

from __future__ import annotations

import time

from starlette.types import Scope

from service.core.logs import ACCESS
from service.core.metrics import Metrics

_STATUS = {n: str(n) for n in range(100, 600)}  # (no str() per request)


class Recorder:
    """A request's metrics (`Metrics.request_done`) and access-log line."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def __call__(
        self, scope: Scope, *, method: str, route: str, status: int, start: float, rid: str
    ) -> None:
        elapsed = time.perf_counter() - start
        self.metrics.request_done(
            "http", method, route, _STATUS.get(status) or str(status), elapsed
        )
        if ACCESS.enabled():
            ACCESS.write({
                "request_id": rid, "method": method, "path": scope["path"], "status": status,
                "duration_ms": round(elapsed * 1e3, 3),
                **scope.get("log_fields", {}),  # model, sequences, batch (forwards)
            })  # fmt: skip
