"""Typed settings, read once (RNN_SERVE_* environment variables, .env) in the app factory."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.core.cpus import usable_cpus
from service.core.schemas.config import RNNConfig

OBJECT_SCHEMES = ("s3://", "gs://", "az://", "azure://", "abfs://")  # what obstore opens


class Settings(BaseSettings):
    """Every knob of the service. Environment: RNN_SERVE_<NAME>, e.g. RNN_SERVE_DEVICE=cpu."""

    model_config = SettingsConfigDict(
        env_prefix="RNN_SERVE_", env_file=".env", extra="ignore", frozen=True
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    grpc_port: int = Field(
        default=8001,
        ge=0,
        le=65535,
        description="The gRPC front end's port (Triton's GRPCInferenceService, health, "
        "reflection), on the same host as HTTP; 0 turns it off.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"  # any case: INFO works
    log_format: Literal["json", "text"] = "json"
    tracing: bool = Field(
        default=False,
        description="OpenTelemetry spans per request and forward stage (the tracing extra; "
        "exporters as OpenTelemetry's OTEL_* variables say).",
    )
    shutdown_timeout_s: float = Field(
        default=30.0, gt=0, description="On SIGTERM: time to finish in-flight and queued requests."
    )

    # Device and numerics.
    device: str = Field(
        default="auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="auto = CUDA when available, else CPU; or force cpu / cuda / cuda:N.",
    )
    cuda_fp32_precision: Literal["ieee", "tf32"] = Field(
        default="ieee",
        description="float32 RNNs on cuDNN: exact IEEE float32 (default) or faster TF32 (~1e-3).",
    )
    torch_threads: int = Field(
        default=0,
        ge=0,
        description="torch intra-op threads; 0 = one per CPU but one, which is left to the event "
        "loop (measured in bench/REPORT.md: on 2 cores, 1 thread beats 2 by 30% under load).",
    )

    gc_threshold: int = Field(
        default=20_000,
        ge=0,
        le=10_000_000,
        description="Python's young-generation collection threshold in every serving process; "
        "0 keeps Python's 700 (a collection walks the requests in flight: on 2 CPUs, 20000 "
        "saves about 5% of the CPU a small request costs).",
    )

    # API keys (service.http.auth). None configured: the server is open (local use).
    inference_keys: list[SecretStr] = Field(
        default=[], description="Keys with the inference scope (a JSON list)."
    )
    admin_keys: list[SecretStr] = Field(
        default=[], description="Keys with the admin scope, which includes inference (JSON)."
    )
    api_keys_file: Path | None = Field(
        default=None, description="A file of '<inference|admin>:<key>' lines (a mounted secret)."
    )
    protect_metrics: bool = Field(
        default=False, description="With keys configured, /metrics needs an admin key too."
    )

    # Connections (service.http.protocol).
    header_timeout_s: float = Field(
        default=10.0, gt=0, description="A request head must arrive within this (else 408)."
    )
    body_timeout_s: float = Field(
        default=30.0, gt=0, description="The longest pause while a body arrives (else closed)."
    )
    max_connections: int = Field(
        default=1000, ge=1, description="Open connections at most; one more gets 503."
    )
    max_header_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="Bytes of a request head (request line and headers) at most; past it 431 "
        "and the connection is closed.",
    )
    max_headers: int = Field(
        default=100, ge=8, description="Header fields in a request head at most (else 431)."
    )

    # gRPC (service.grpc): message size is max_body_bytes.
    grpc_max_concurrent_rpcs: int = Field(
        default=1000, ge=1, description="gRPC calls at once (a stream is one); past it "
        "RESOURCE_EXHAUSTED.",
    )  # fmt: skip
    grpc_max_concurrent_streams: int = Field(
        default=256, ge=1, description="HTTP/2 streams (calls) at once on one gRPC connection."
    )
    grpc_stream_max_in_flight: int = Field(
        default=256, ge=1, description="Requests of one ModelStreamInfer stream in flight (or "
        "answered, not yet sent) at most; past it the stream is not read until an answer goes "
        "out.",
    )  # fmt: skip

    # Processes. One engine (registry, batcher, sessions) per device; HTTP may be served by
    # several front-end processes that reach it over a Unix socket and shared memory.
    frontends: int = Field(
        default=0,
        ge=0,
        description="HTTP front-end processes; 0 = as fits the machine (see the README); 1 = one "
        "process serves HTTP and runs the engine.",
    )
    shm_arena_bytes: int = Field(
        default=32 * 1024 * 1024,
        gt=0,
        description="Each front-end's shared-memory arena for tensors on their way to and from "
        "the engine; a request that does not fit travels over the socket instead.",
    )
    engine_socket: str = Field(
        default="",
        description="Set by rnn-serve for its front-end processes: the engine's Unix socket.",
    )

    # Dynamic batching.
    max_batch_sequences: int = Field(
        default=256, ge=1, description="Most sequences joined into one forward (1 = no batching)."
    )
    max_batch_wait_ms: float = Field(
        default=0.0,
        ge=0,
        description="How long a batch may wait for company; 0 = run at once when the device is "
        "idle and batch what accumulates while it is busy.",
    )
    max_queue: int = Field(default=2048, ge=1, description="Queued requests before 429.")
    request_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="The longest a forward may take, queueing and compute together: past it "
        "504, and its remaining time slices never run. A request's X-Request-Timeout header "
        "(seconds) can shorten it, never lengthen it.",
    )
    disconnect_check_after_s: float = Field(
        default=0.05,
        ge=0,
        description="A forward still running after this long starts watching its connection: "
        "a client that leaves cancels its queued or sliced work (logged and counted as 499).",
    )

    # The model every replica starts with.
    default_model_name: str = "default"
    default_model: RNNConfig = RNNConfig(input_size=10, hidden_size=20, num_layers=2)

    # Limits (422 for model limits, 413 for sizes).
    max_body_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    max_tensor_elements: int = Field(default=16 * 1024 * 1024, gt=0)
    max_input_size: int = Field(default=65536, gt=0)
    max_hidden_size: int = Field(default=8192, gt=0)
    max_num_layers: int = Field(default=16, gt=0)
    max_parameters: int = Field(default=256 * 1024 * 1024, gt=0)

    max_weights_bytes: int = Field(default=1024 * 1024 * 1024, gt=0)
    max_request_macs: float = Field(
        default=1e12,
        gt=0,
        description="A forward's cost budget, in multiply-accumulates (time steps x sequences x "
        "the model's MACs a step); past it, 413 before anything runs. ~1e12 is minutes of CPU.",
    )
    max_unsliced_macs: float = Field(
        default=2.5e9,
        gt=0,
        description="The budget of a forward that cannot run in time slices (bidirectional): it "
        "holds the device whole. ~2.5e9 is about half a second of one CPU core.",
    )
    slice_macs: float = Field(
        default=1e8,
        gt=0,
        description="A longer unidirectional forward runs in time slices of about this many "
        "MACs (~15 ms on one CPU core), other requests' forwards running between them "
        "(bench.fairness: small requests' p99 45-92 ms at 1e8, 36-83 ms at 2e8, 2.5-3 s unsliced).",
    )
    inline_configs: bool = Field(
        default=True,
        description="Whether /v1/rnn/forward takes inline configs; false leaves only registered "
        "models (for production).",
    )

    # Streaming sessions.
    session_ttl_s: float = Field(default=600.0, gt=0, description="Idle sessions expire after.")
    max_sessions: int = Field(default=10000, ge=1, description="Open sessions before 429.")
    # WebSocket streams (service.http.websocket): a frame's size is max_body_bytes at most.
    max_streams: int = Field(
        default=1000, ge=1, description="WebSocket streams open at once (a process's); past it "
        "a new one is closed at once with 1013 (try again later).",
    )  # fmt: skip
    stream_idle_timeout_s: float = Field(
        default=60.0, gt=0, description="A WebSocket stream that sends nothing, or does not read "
        "its answers, for this long is closed (4408).",
    )  # fmt: skip
    stream_max_in_flight: int = Field(
        default=4, ge=1, description="Frames of one WebSocket stream read and not yet answered "
        "at most; past it the socket is not read, and TCP holds the client back.",
    )  # fmt: skip
    max_session_state_bytes: int = Field(
        default=1024**3,
        gt=0,
        description="Bytes of state all sessions may hold together; past it, the least recently "
        "used idle sessions are ended (and a session bigger than the budget alone is refused).",
    )
    max_sequence_id_length: int = Field(
        default=256,
        ge=1,
        le=4096,
        description="Characters of an OIP sequence_id string at most (a uint64 is always taken).",
    )
    session_store: str = Field(
        default="memory",
        pattern=r"^(memory|(redis|rediss|unix)://.+)$",
        description="Where sessions' states live: `memory` (this process; a restart ends them) "
        "or a Redis (or Valkey) URL, redis://host:port/db or rediss:// for TLS, whose password "
        "may be in the URL or in RNN_SERVE_SESSION_STORE_PASSWORD_FILE: every chunk's state "
        "commits there before its answer, and any replica serves any session "
        "(docs/sessions.md).",
    )
    session_store_password_file: Path | None = Field(
        default=None,
        description="A file holding the Redis password (a mounted secret), if not in the URL.",
    )
    session_store_timeout_s: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="How long one Redis call may take before the chunk answers 503.",
    )

    # Registry and model repository.
    model_repository: str = Field(
        default="models",
        min_length=1,
        description="Where models are kept: a local folder (<name>/config.json + "
        "weights.safetensors) or an object store, s3://bucket/prefix (gs:// and az:// too), "
        "with endpoint and credentials from the standard AWS_* variables (docs/operations.md).",
    )
    model_cache: Path = Field(
        default=Path(tempfile.gettempdir()) / "rnn-serve-model-cache",
        description="With an object store: the local folder that keeps the weights this "
        "replica serves (by digest), so a restart or a rebuild does not download them again.",
    )
    model_cache_bytes: int = Field(
        default=8 * 1024**3, gt=0, description="Bytes the model cache may hold (LRU past it)."
    )
    repository_recheck_s: float = Field(
        default=1.0,
        ge=0,
        description="Changes made through rnn-serve are seen at once by this replica, and by "
        "the others within this time (a folder: a lookup re-reads a model's files at least this "
        "often; an object store: its generation object is polled this often).",
    )
    max_models: int = Field(default=1000, ge=1, description="Registered models at most (507).")
    max_repository_bytes: int = Field(
        default=20 * 1024**3, gt=0, description="Bytes of the repository's weights files (507)."
    )
    inline_cache_size: int = Field(
        default=32, ge=1, description="Modules built for inline configs kept, least recently used."
    )
    max_loaded_bytes: int = Field(
        default=4 * 1024**3,
        gt=0,
        description="Bytes of parameters kept built on the device; least recently used dropped.",
    )

    @field_validator("model_repository", mode="before")
    @classmethod
    def _location(cls, value: object) -> object:
        value = os.fspath(value) if isinstance(value, os.PathLike) else value
        if isinstance(value, str) and "://" in value and not value.startswith(OBJECT_SCHEMES):
            raise ValueError(
                "expected a folder or an object store's URL (s3://, gs://, az://bucket/prefix)"
            )
        if isinstance(value, str) and value.startswith(OBJECT_SCHEMES):
            _check_object_url(value)
        return value

    @field_validator("log_level", "log_format", "cuda_fp32_precision", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        """INFO, Info and info are one level (operators write all three)."""
        return value.lower() if isinstance(value, str) else value


_BUCKET = re.compile(r"[a-z0-9][a-z0-9._\-]{1,61}[a-z0-9]")  # S3, GCS and Azure names
_SEGMENT = re.compile(r"[A-Za-z0-9._\-]+")  # a prefix's segments: no spaces, no escapes


def _check_object_url(url: str) -> None:
    """An object store's URL names a bucket and, optionally, a plain prefix: keys are written
    under it as they are, so a prefix that a store would read otherwise (`..`, an empty segment,
    a percent-escape, a space) is refused here, not found later under another name."""
    scheme, _, rest = url.partition("://")
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.rstrip("/")
    if not _BUCKET.fullmatch(bucket):
        raise ValueError(
            f"expected {scheme}://BUCKET[/PREFIX] with a bucket name of 3-63 lowercase letters, "
            f"digits, dots, underscores and hyphens, got {url!r}"
        )
    for segment in prefix.split("/") if prefix else []:
        if not _SEGMENT.fullmatch(segment) or segment in (".", ".."):
            raise ValueError(
                f"expected a prefix of plain segments (letters, digits, '.', '_', '-', one '/' "
                f"between them; no '..', no empty segment, no %-escape or space), got {url!r}"
            )


def frontends_for(settings: Settings) -> int:
    """How many HTTP front-end processes: the setting, or as fits the machine.

    A second front-end pays only when a core is free for it: each request then also crosses a
    socket and shared memory to the engine. On 2 CPUs that crossing cost more than it gave
    (measured: bench/REPORT.md), so up to 2 CPUs one process serves HTTP and runs the engine;
    beyond, half the CPUs serve HTTP (the rest are the engine's torch threads'), at most 8.
    """
    if settings.frontends:
        return settings.frontends
    cpus = usable_cpus()
    return 1 if cpus <= 2 else min(cpus // 2, 8)
