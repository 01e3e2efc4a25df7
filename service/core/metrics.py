"""Prometheus metrics, one CollectorRegistry per app (tests build many apps in one process).

With several processes (front-ends and the engine, see `service.runtime.transport`), rnn-serve sets
PROMETHEUS_MULTIPROC_DIR for all of them: prometheus-client then keeps every process's values in
files there, and whichever process answers /metrics reports the sum over all of them.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import (
    GC_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.samples import Sample

__all__ = ["CONTENT_TYPE", "Metrics", "StageTimers", "model_label"]


def model_label(name: str, inline: bool) -> str:
    """The `model` label: the registered name; "inline" for every inline config (their keys
    are unbounded, and a label's values must not be)."""
    return "inline" if inline else name


_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0
)  # fmt: skip


class StageTimers:
    """One model's metric children, looked up once (labels() costs a lock and a dict)."""

    STAGES = ("decode", "queue", "compute", "encode")

    def __init__(self, metrics: Metrics, model: str) -> None:
        histogram = metrics.stage_seconds
        self.decode = histogram.labels("decode", model)
        self.queue = histogram.labels("queue", model)
        self.compute = histogram.labels("compute", model)
        self.encode = histogram.labels("encode", model)
        self.success = metrics.inferences.labels(model, "success")
        self.fail = metrics.inferences.labels(model, "fail")
        self._last = metrics.last_inference.labels(model)

    def served(self) -> None:
        self.success.inc()
        self._last.set(time.time())


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "rnn_serve_requests",
            "Requests by protocol (http, grpc), route (a gRPC method's path) and status (a gRPC "
            "status's name); each request on a gRPC stream counts as one.",
            ["protocol", "method", "route", "status"], registry=r,
        )  # fmt: skip
        self.request_seconds = Histogram(
            "rnn_serve_request_duration_seconds", "Request latency by protocol and route.",
            ["protocol", "route"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.in_flight = Gauge(
            "rnn_serve_requests_in_flight", "HTTP requests being served now.", registry=r,
            multiprocess_mode="livesum",
        )  # fmt: skip
        self.queue_depth = Gauge(
            "rnn_serve_queue_depth", "Forwards waiting in the batcher's queues.", registry=r,
            multiprocess_mode="livesum",
        )  # fmt: skip
        self.stage_seconds = Histogram(
            "rnn_serve_stage_seconds",
            "Forward latency split into decode, queue, compute, encode, by model.",
            ["stage", "model"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.inferences = Counter(
            "rnn_serve_model_inferences",
            "Forwards (and session chunks) by model and outcome (success, fail).",
            ["model", "outcome"], registry=r,
        )  # fmt: skip
        self.executions = Counter(
            "rnn_serve_model_executions",
            "Forwards run on the device by model (a batch of requests is one).",
            ["model"], registry=r,
        )  # fmt: skip
        self.last_inference = Gauge(
            "rnn_serve_model_last_inference_timestamp_seconds",
            "When the model last answered a forward (Unix seconds).",
            ["model"], registry=r, multiprocess_mode="max",
        )  # fmt: skip
        self._timers: dict[str, StageTimers] = {}
        self._request_counters: dict[tuple[str, str, str, str], Any] = {}
        self._request_latencies: dict[tuple[str, str], Any] = {}
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
        self.websocket_streams = Gauge(
            "rnn_serve_websocket_streams", "WebSocket streams open.", registry=r,
            multiprocess_mode="livesum",
        )  # fmt: skip
        self.websocket_frames = Counter(
            "rnn_serve_websocket_frames", "WebSocket frames, by direction (in, out) and kind "
            "(text, binary).", ["direction", "kind"], registry=r,
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
        # the session store (RNN_SERVE_SESSION_STORE=redis://...)
        self.session_store_seconds = Histogram(
            "rnn_serve_session_store_seconds",
            "Round trips to the session store by operation (commit, load, create, ...).",
            ["op"], buckets=(0.0001, 0.00025, *_LATENCY_BUCKETS), registry=r,
        )  # fmt: skip
        self.session_store_errors = Counter(
            "rnn_serve_session_store_errors",
            "Session store calls that failed (unreachable, timed out) by operation.",
            ["op"], registry=r,
        )  # fmt: skip
        self.session_store_commits = Counter(
            "rnn_serve_session_store_commits", "Chunks' states committed to the session store.",
            registry=r,
        )  # fmt: skip
        self.session_store_conflicts = Counter(
            "rnn_serve_session_store_conflicts",
            "Commits refused because the session had moved on from the chunk's step (another "
            "replica committed first).",
            registry=r,
        )  # fmt: skip
        self.session_store_pipeline = Histogram(
            "rnn_serve_session_store_pipeline_commits",
            "Commits sent to the session store in one round trip.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r,
        )  # fmt: skip
        for op in ("commit", "load", "create", "step", "delete", "ping"):  # zeros until used
            self.session_store_seconds.labels(op)
            self.session_store_errors.labels(op)
        self.session_cache_misses = Counter(
            "rnn_serve_session_cache_misses",
            "Sessions read from the session store: not in this replica's memory, or behind it.",
            registry=r,
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

        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # process_* (CPU, memory, fds) and python_gc_* of this process; with several
            # processes, render() adds the engine process's instead
            r.register(PROCESS_COLLECTOR)
            r.register(GC_COLLECTOR)

    def forget_model(self, model: str) -> None:
        """A deleted model's series go: label values must not grow with every name ever
        registered. (With several processes, prometheus-client keeps what its files hold.)"""
        self._timers.pop(model, None)
        labelled = [
            *((self.stage_seconds, (stage, model)) for stage in StageTimers.STAGES),
            *((self.inferences, (model, outcome)) for outcome in ("success", "fail")),
            (self.executions, (model,)),
            (self.last_inference, (model,)),
        ]
        for metric, labels in labelled:
            with contextlib.suppress(KeyError):
                metric.remove(*labels)

    def request_done(
        self, protocol: str, method: str, route: str, status: str, elapsed: float
    ) -> None:
        """A request's count (by protocol, method, route and status) and latency (by protocol
        and route), every front end's; the metric children are bound once each."""
        counter = self._request_counters.get((protocol, method, route, status))
        if counter is None:
            counter = self.requests.labels(protocol, method, route, status)
            self._request_counters[(protocol, method, route, status)] = counter
        counter.inc()
        latency = self._request_latencies.get((protocol, route))
        if latency is None:
            latency = self.request_seconds.labels(protocol, route)
            self._request_latencies[(protocol, route)] = latency
        latency.observe(elapsed)

    def stages_for(self, model: str) -> StageTimers:
        timers = self._timers.get(model)
        if timers is None:
            timers = self._timers[model] = StageTimers(self, model)
        return timers

    def _merged(self) -> CollectorRegistry:
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            return self.registry
        merged = CollectorRegistry()
        MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        # the process that holds the models and the device: the front-ends' parent
        engine_pid = os.getppid() if os.environ.get("RNN_SERVE_ENGINE_SOCKET") else os.getpid()
        ProcessCollector(pid=lambda: engine_pid, registry=merged)
        return merged

    def render(self) -> bytes:
        return generate_latest(self._merged())

    def samples(self, *names: str) -> dict[str, list[Sample]]:
        """The samples of the metric families `names` (summed over processes), from one
        collection: for the OIP statistics extension."""
        found: dict[str, list[Sample]] = {name: [] for name in names}
        for family in self._merged().collect():
            if family.name in found:
                found[family.name].extend(family.samples)
        return found
