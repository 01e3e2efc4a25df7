"""Every resource a client can make the server spend is bounded, and faults come back clean:
answers past the element limit, forwards past the cost budgets, sessions' state, repository
quotas, inline configs turned off, orphaned temporary files, full or read-only disks, out of
memory, a corrupt default model, and the default model's deletion."""

from __future__ import annotations

import errno
import functools
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.catalog import folder as repository_module
from tests.conftest import make_settings, open_client
from tests.support import eventually
from tests.support.helpers import b64

pytestmark = pytest.mark.anyio


def problem(r: httpx.Response, status: int, *fragments: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    for fragment in fragments:
        assert fragment in body["detail"], body["detail"]
    assert "Traceback" not in r.text
    return body


async def test_answers_over_the_element_limit_are_413_before_any_compute(
    anyio_backend: str,
) -> None:
    """A 5 MB body asking for a 2.7 GB answer (input (1, 1e6, 1), hidden 256), scaled down."""
    async for c in open_client(make_settings(max_tensor_elements=100_000)):
        config = {"input_size": 1, "hidden_size": 256}
        x = {
            "shape": [1, 50_000, 1],
            "dtype": "float32",
            "b64": b64(np.zeros((1, 50_000, 1)))["b64"],
        }
        before = (await c.get("/metrics")).text.count("rnn_serve_batch_sequences_count 1")
        r = await c.post("/v1/rnn/forward", json={"config": config, "input": x})
        problem(r, 413, "12800000 output elements", "RNN_SERVE_MAX_TENSOR_ELEMENTS")
        assert (await c.get("/metrics")).text.count("rnn_serve_batch_sequences_count 1") == before


async def test_forwards_over_the_cost_budgets_are_413(anyio_backend: str) -> None:
    settings = make_settings(max_request_macs=1e7, max_unsliced_macs=1e5)
    async for c in open_client(settings):
        config = {"input_size": 4, "hidden_size": 32}  # 32*(4+32) = 1152 MACs a step
        long = {"shape": [10_000, 4], "dtype": "float32", "b64": b64(np.zeros((10_000, 4)))["b64"]}
        problem(await c.post("/v1/rnn/forward", json={"config": config, "input": long}), 413,
                "1.15e+07 multiply-accumulates", "RNN_SERVE_MAX_REQUEST_MACS")  # fmt: skip
        bidir = {**config, "bidirectional": True}
        short = np.zeros((50, 4)).tolist()  # 2*1152*50 = 115200 > 1e5, but runs unidirectional
        problem(await c.post("/v1/rnn/forward", json={"config": bidir, "input": short}), 413,
                "cannot run in time slices", "RNN_SERVE_MAX_UNSLICED_MACS")  # fmt: skip
        ok = await c.post("/v1/rnn/forward", json={"config": config, "input": short})
        assert ok.status_code == 200, ok.text


async def test_session_state_has_a_budget_lru_idle_sessions_make_room(
    anyio_backend: str,
) -> None:
    # the default model: 2 layers x 20 floats = 160 bytes a sequence's state
    async for c in open_client(make_settings(max_session_state_bytes=1000)):
        chunk = {"input": np.zeros((2, 2, 10)).tolist()}  # 2 sequences: 320 bytes
        ids = []
        for _ in range(4):
            ids.append((await c.post("/v1/models/default/sessions", json={})).json()["session_id"])
            r = await c.post(f"/v1/sessions/{ids[-1]}/forward", json=chunk)
            assert r.status_code == 200, r.text
        # 4 x 320 > 1000: the least recently used (the first) was ended to make room
        gone = await c.post(f"/v1/sessions/{ids[0]}/forward", json=chunk)
        problem(gone, 404, "ended for room")
        assert (await c.post(f"/v1/sessions/{ids[3]}/forward", json=chunk)).status_code == 200
        metrics = (await c.get("/metrics")).text
        assert "rnn_serve_session_evictions_total 1.0" in metrics
        assert "rnn_serve_session_state_bytes 960.0" in metrics
        big = (await c.post("/v1/models/default/sessions", json={})).json()["session_id"]
        too_big = {"input": np.zeros((2, 7, 10)).tolist()}  # 7 sequences: 1120 bytes alone
        problem(await c.post(f"/v1/sessions/{big}/forward", json=too_big), 413,
                "over the budget", "RNN_SERVE_MAX_SESSION_STATE_BYTES")  # fmt: skip


async def test_repository_quotas_are_507(tmp_path: Path, anyio_backend: str) -> None:
    settings = make_settings(model_repository=tmp_path / "repo", max_models=2)
    async for c in open_client(settings):  # holds `default` already
        small = {"input_size": 2, "hidden_size": 2}
        assert (await c.post("/v1/models", json={"name": "a", "config": small})).status_code == 201
        r = await c.post("/v1/models", json={"name": "b", "config": small})
        problem(r, 507, "holds 2 models", "RNN_SERVE_MAX_MODELS")
    used = sum(p.stat().st_size for p in (tmp_path / "repo").glob("*/weights.safetensors"))
    settings = make_settings(model_repository=tmp_path / "repo", max_repository_bytes=used + 100)
    async for c in open_client(settings):
        big = {"input_size": 50, "hidden_size": 50}
        r = await c.post("/v1/models", json={"name": "b", "config": big})
        problem(r, 507, "RNN_SERVE_MAX_REPOSITORY_BYTES")
        assert (await c.get("/v1/models/b")).status_code == 404  # nothing was written


async def test_inline_configs_can_be_turned_off(anyio_backend: str) -> None:
    async for c in open_client(make_settings(inline_configs=False)):
        r = await c.post("/v1/rnn/forward", json={"config": {"input_size": 1, "hidden_size": 1},
                                                  "input": [[0.0]]})  # fmt: skip
        problem(r, 403, "RNN_SERVE_INLINE_CONFIGS")
        ok = await c.post("/v1/models/default/forward", json={"input": [[0.0] * 10]})
        assert ok.status_code == 200


async def test_orphaned_temporary_files_are_removed_at_start(
    tmp_path: Path, anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """kill -9 during an upload left a .tmp file forever; now the next start removes it (once
    it is old enough to belong to no write in progress)."""
    repo = tmp_path / "repo"
    async for c in open_client(make_settings(model_repository=repo)):
        await c.post(
            "/v1/models", json={"name": "m", "config": {"input_size": 2, "hidden_size": 2}}
        )
    old = time.time() - 3600
    leftovers = [
        repo / "m" / ".weights.safetensors.0123.tmp",
        repo / ".staging" / "m-0123" / "config.json",
        repo / ".trash" / "x-0123" / "weights.safetensors",
    ]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 1000)
        os.utime(path, (old, old))
        os.utime(path.parent, (old, old))
    fresh = repo / "m" / ".weights.safetensors.4567.tmp"  # a write in progress elsewhere
    fresh.write_bytes(b"y")
    with caplog.at_level(logging.WARNING, logger="rnn_serve.catalog"):
        async for c in open_client(make_settings(model_repository=repo)):
            assert (await c.get("/v1/models/m")).status_code == 200
    assert not leftovers[0].exists()
    assert not (repo / ".staging" / "m-0123").exists()
    assert not (repo / ".trash" / "x-0123").exists()
    assert fresh.exists()
    assert sum("interrupted write" in r.getMessage() for r in caplog.records) == 3


@pytest.mark.parametrize(
    ("code", "status", "fragment"),
    [(errno.ENOSPC, 507, "disk is full"), (errno.EROFS, 503, "Read-only file system"),
     (errno.EIO, 503, "Input/output error")],
)  # fmt: skip
async def test_io_errors_are_clean_problems_and_keep_the_old_state(
    tmp_path: Path, anyio_backend: str, monkeypatch: pytest.MonkeyPatch,
    code: int, status: int, fragment: str,
) -> None:  # fmt: skip
    from safetensors.torch import save

    from tests.oracle import torch_module

    async for c in open_client(make_settings(model_repository=tmp_path / "repo")):
        config = {"input_size": 2, "hidden_size": 3}
        await c.post("/v1/models", json={"name": "m", "config": config})
        before = (await c.get("/v1/models/m/weights")).content

        def broken(path: Path, data: bytes) -> None:
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(repository_module, "_write_synced", broken)
        blob = save({k: v + 1 for k, v in torch_module(config).state_dict().items()})
        r = await c.put("/v1/models/m/weights", content=blob,
                        headers={"content-type": "application/octet-stream"})  # fmt: skip
        body = problem(r, status, fragment, "nothing was changed")
        assert str(tmp_path) not in body["detail"]  # no internal path
        r = await c.post("/v1/models", json={"name": "n", "config": config})
        problem(r, status, fragment)
        monkeypatch.undo()
        # the same connection answers again, and the old weights are still served
        assert (await c.get("/v1/models/m/weights")).content == before
        assert (await c.get("/v1/models/n")).status_code == 404
        assert not list((tmp_path / "repo" / "m").glob("*.tmp"))


async def test_out_of_memory_in_a_forward_is_507_and_the_next_works(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.engine.runner import run_batch as real

    calls = {"n": 0}

    def failing_once(*args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: "
                               "can't allocate memory: you tried to allocate 2929167360 bytes")  # fmt: skip
        return real(*args)

    monkeypatch.setattr("service.engine.engine.run_batch", failing_once)
    body = {"input": [[0.0] * 10]}
    problem(await client.post("/v1/models/default/forward", json=body), 507, "out of memory")
    assert (await client.post("/v1/models/default/forward", json=body)).status_code == 200


async def test_a_corrupt_default_model_is_logged_readiness_says_why_and_shutdown_is_clean(
    tmp_path: Path, anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    repo = tmp_path / "repo"
    async for _ in open_client(make_settings(model_repository=repo)):
        pass  # a repository holding the default model
    (repo / "default" / "weights.safetensors").write_bytes(b"not safetensors at all")
    from asgi_lifespan import LifespanManager

    from service.app import create_app

    app = create_app(make_settings(model_repository=repo))
    with caplog.at_level(logging.ERROR):
        async with LifespanManager(app) as manager:  # a clean start and a clean stop
            transport = httpx.ASGITransport(manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                ready = functools.partial(c.get, "/readyz")
                r = await eventually(ready, lambda r: "cannot be served" in r.text, 10)
                problem(r, 503, "the default model cannot be served", "cannot be loaded")
    assert any("cannot be served" in rec.getMessage() for rec in caplog.records)


async def test_the_default_model_cannot_be_deleted_and_readiness_agrees(
    tmp_path: Path, anyio_backend: str
) -> None:
    repo = tmp_path / "repo"
    async for c in open_client(make_settings(model_repository=repo)):
        problem(await c.delete("/v1/models/default"), 409, "default model", "cannot be deleted")
        assert (await c.get("/readyz")).status_code == 200
        shutil.rmtree(repo / "default")  # by hand, behind the server's back
        (repo / ".generation").unlink()  # as if another tool changed the folder
        problem(await c.get("/readyz"), 503, "gone from the model repository")
