"""Prometheus metrics, one CollectorRegistry per app (tests build many apps in one process).

With several processes (front-ends and the engine, see `service.engine.remote`), rnn-serve sets
PROMETHEUS_MULTIPROC_DIR for all of them: prometheus-client then keeps every process's values in
files there, and whichever process answers /metrics reports the sum over all of them.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["CONTENT_TYPE", "Metrics"]

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0
)  # fmt: skip


class StageTimers:
    """The per-stage histogram children, looked up once (labels() costs a lock and a dict)."""

    def __init__(self, histogram: Histogram) -> None:
        self.decode = histogram.labels("decode")
        self.queue = histogram.labels("queue")
        self.compute = histogram.labels("compute")
        self.encode = histogram.labels("encode")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "rnn_serve_requests", "HTTP requests by route and status.",
            ["method", "route", "status"], registry=r,
        )  # fmt: skip
        self.request_seconds = Histogram(
            "rnn_serve_request_seconds", "HTTP request latency by route.",
            ["route"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.stage_seconds = Histogram(
            "rnn_serve_stage_seconds", "Forward latency split into decode, queue, compute, encode.",
            ["stage"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.stages = StageTimers(self.stage_seconds)
        self.batch_size = Histogram(
            "rnn_serve_batch_sequences", "Sequences per forward run on the device.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=r,
        )  # fmt: skip
        self.timesteps = Counter(
            "rnn_serve_timesteps", "Sequence steps processed (sum of lengths).", registry=r
        )
        self.registry_events = Counter(
            "rnn_serve_registry_events", "Module cache hits, misses, builds and evictions.",
            ["event"], registry=r,
        )  # fmt: skip
        self.open_sessions = Gauge(
            "rnn_serve_open_sessions", "Streaming sessions open.", registry=r,
            multiprocess_mode="livesum",
        )  # fmt: skip
        self.session_state_bytes = Gauge(
            "rnn_serve_session_state_bytes", "Bytes of state the open sessions hold.",
            registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.session_evictions = Counter(
            "rnn_serve_session_evictions", "Idle sessions ended to make room for others' state.",
            registry=r,
        )  # fmt: skip
        self.session_replays = Counter(
            "rnn_serve_session_replays",
            "Retried session chunks answered from the kept answer (not applied twice).",
            registry=r,
        )  # fmt: skip
        self.session_handoffs = Counter(
            "rnn_serve_session_handoffs",
            "Sessions handed to another replica (out) or taken from one (in), and sessions "
            "found lost with a replica that died (lost).",
            ["direction"], registry=r,
        )  # fmt: skip
        self.session_chunk_seconds = Histogram(
            "rnn_serve_session_chunk_seconds", "Latency of one session chunk (queue and compute).",
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.device_memory = Gauge(
            "rnn_serve_device_memory_bytes",
            "Device memory in use: torch's allocated bytes on CUDA; built parameters on the CPU.",
            registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.loaded_parameter_bytes = Gauge(
            "rnn_serve_loaded_parameter_bytes", "Bytes of parameters of the built modules.",
            registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.loaded_models = Gauge(
            "rnn_serve_loaded_modules", "Modules currently built on the device.", registry=r,
            multiprocess_mode="livesum",
        )  # fmt: skip

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            merged = CollectorRegistry()
            MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            return generate_latest(merged)
        return generate_latest(self.registry)
