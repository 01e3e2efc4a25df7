"""The data plane on its own: its admission step (which limit, and where) and its deadline (one
mechanism from the request to the backend), with a backend that only records what reached it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from service.catalog.catalog import Catalog
from service.catalog.spec import ModelSpec
from service.codecs.v1 import V1Forward
from service.core.errors import DeadlineExceeded, Forbidden, PayloadTooLarge
from service.core.metrics import Metrics
from service.core.schemas.api import InlineForwardRequest
from service.core.schemas.config import RNNConfig
from service.core.slow import SlowRequests
from service.dataplane.context import RequestContext
from service.dataplane.plane import DataPlane
from service.engine.job import ForwardJob, ForwardResult
from service.http.answer import status_of
from tests.conftest import make_settings

pytestmark = pytest.mark.anyio


class RecordingBackend:
    """Answers zeros of the right shapes; `hold` keeps a forward waiting until it is cancelled."""

    device = "cpu"

    def __init__(self, hold: bool = False) -> None:
        self.hold = hold
        self.jobs: list[ForwardJob] = []
        self.cancelled = 0

    async def forward(self, spec: ModelSpec, job: ForwardJob) -> ForwardResult:
        self.jobs.append(job)
        if self.hold:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        c = spec.config
        out = np.zeros((job.seq_len, job.batch, c.output_size), np.float32)
        h = np.zeros((c.state_rows, job.batch, c.h_size), np.float32)
        return ForwardResult(out, h, queue_s=0.25, compute_s=0.5)  # as an engine reports them


def ctx(timeout_s: float | None = None) -> RequestContext:
    """A request's context as a front end makes it (here: no keys, maybe a deadline)."""
    return RequestContext("test", "test", timeout_s=timeout_s)


def plane(
    tmp_path: Path, backend: RecordingBackend, metrics: Metrics | None = None, **overrides: Any
) -> DataPlane:
    settings = make_settings(model_repository=tmp_path / "repo", **overrides)
    catalog = Catalog(settings, Metrics())
    slow = SlowRequests(0.01)
    return DataPlane(settings, catalog, backend, metrics or Metrics(), "cpu", slow)  # type: ignore[arg-type]


def config_of(config: dict[str, Any]) -> RNNConfig:
    return RNNConfig.model_validate(config)


def inline(config: dict[str, Any], steps: int, batch: int = 1) -> V1Forward:
    x = np.zeros((steps, batch, config["input_size"]), np.float32)
    body = {"config": config, "input": {"shape": list(x.shape), "dtype": "float32",
            "data": x.reshape(-1).tolist()}}  # fmt: skip
    return V1Forward(orjson.dumps(body), InlineForwardRequest)


SMALL = {"input_size": 2, "hidden_size": 3}


async def test_a_forward_within_every_limit_reaches_the_backend(tmp_path: Path) -> None:
    backend = RecordingBackend()
    answer = await plane(tmp_path, backend).infer(ctx(), inline(SMALL, 4, 2), config_of(SMALL))
    assert status_of(answer) == 200
    assert [(j.seq_len, j.batch) for j in backend.jobs] == [(4, 2)]


@pytest.mark.parametrize(
    ("overrides", "config", "steps", "setting"),
    [
        ({"max_tensor_elements": 20}, SMALL, 4, "RNN_SERVE_MAX_TENSOR_ELEMENTS"),  # 4*2*3 out
        ({"max_request_macs": 100.0}, SMALL, 10, "RNN_SERVE_MAX_REQUEST_MACS"),
        (
            {"max_unsliced_macs": 100.0},
            {**SMALL, "bidirectional": True},
            10,
            "RNN_SERVE_MAX_UNSLICED_MACS",
        ),
    ],
    ids=["answer-elements", "macs", "unsliced-macs"],
)
async def test_admission_refuses_before_anything_runs_and_names_the_limit(
    tmp_path: Path, overrides: dict[str, Any], config: dict[str, Any], steps: int, setting: str
) -> None:
    backend = RecordingBackend()
    with pytest.raises(PayloadTooLarge, match=setting):
        await plane(tmp_path, backend, **overrides).infer(
            ctx(), inline(config, steps, 2), config_of(config)
        )
    assert backend.jobs == []  # refused before the queue


async def test_inline_configs_turned_off_are_refused_at_the_door(tmp_path: Path) -> None:
    backend = RecordingBackend()
    with pytest.raises(Forbidden, match="RNN_SERVE_INLINE_CONFIGS"):
        await plane(tmp_path, backend, inline_configs=False).infer(
            ctx(), inline(SMALL, 1), config_of(SMALL)
        )
    assert backend.jobs == []


async def test_the_deadline_cancels_the_backends_work_and_is_a_504(tmp_path: Path) -> None:
    backend = RecordingBackend(hold=True)
    dp = plane(tmp_path, backend, request_timeout_s=5.0)
    with pytest.raises(DeadlineExceeded, match=r"deadline of 0\.05s"):
        await dp.infer(ctx(0.05), inline(SMALL, 1), config_of(SMALL))  # the caller's, shorter
    assert backend.cancelled == 1
    # the server's deadline caps a longer one the caller asks for
    dp = plane(tmp_path, backend, request_timeout_s=0.05)
    with pytest.raises(DeadlineExceeded, match=r"deadline of 0\.05s"):
        await dp.infer(ctx(1000.0), inline(SMALL, 1), config_of(SMALL))
    assert backend.cancelled == 2


async def test_a_cancellation_that_is_not_the_deadline_goes_through(tmp_path: Path) -> None:
    """A client gone (or the server stopping) cancels the task: that is not a 504."""
    backend = RecordingBackend(hold=True)
    task = asyncio.ensure_future(
        plane(tmp_path, backend).infer(ctx(), inline(SMALL, 1), config_of(SMALL))
    )
    while not backend.jobs:  # noqa: ASYNC110 (the fake backend has no event to wait on)
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert backend.cancelled == 1


async def test_every_stage_is_timed_in_one_place(tmp_path: Path) -> None:
    """decode and encode as the data plane runs them, queue and compute as the engine reports
    them in the result (whatever process it ran in)."""
    metrics = Metrics()
    dp = plane(tmp_path, RecordingBackend(), metrics)
    for _ in range(2):
        await dp.infer(ctx(), inline(SMALL, 1), config_of(SMALL))

    def observed(stage: str, what: str) -> float | None:
        labels = {"stage": stage, "model": "inline"}
        return metrics.registry.get_sample_value(f"rnn_serve_stage_seconds_{what}", labels)

    assert observed("queue", "sum") == 0.5
    assert observed("compute", "sum") == 1.0
    for stage in ("decode", "queue", "compute", "encode"):
        assert observed(stage, "count") == 2, stage
