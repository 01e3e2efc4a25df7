"""The engine across processes, in one event loop: RemoteBackends (front-ends) talk to an
EngineServer over a real Unix socket, with tensors in shared memory; answers equal the local
backend's, batching spans front-ends, sessions work from any front-end, errors keep their kind."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.catalog.spec import ModelSpec
from service.core.errors import InvalidInput, SessionNotFound
from service.core.metrics import Metrics
from service.core.schemas.config import RNNConfig
from service.engine.job import Inputs
from service.engine.shm import Arena
from service.engine.tensor import WireTensor
from service.engine.validate import validate_forward
from service.engine.weights import seeded_weights
from service.runtime.host import EngineHost
from service.runtime.transport.client import RemoteBackend
from service.runtime.transport.server import EngineServer
from tests.conftest import make_settings
from tests.oracle import forward, lstm_forward, seeded_params
from tests.support import eventually

pytestmark = pytest.mark.anyio
LSTM = {"mode": "LSTM", "input_size": 3, "hidden_size": 5, "num_layers": 2, "proj_size": 2}


def test_arena_allocates_aligned_blocks_and_merges_freed_ones() -> None:
    arena = Arena(1024)
    try:
        a, b, c = arena.alloc(100), arena.alloc(64), arena.alloc(1)
        assert (a, b, c) == (0, 128, 192)
        assert arena.alloc(2048) is None  # never more than there is
        arena.free(128, 64)
        assert arena.alloc(60) == 128  # first fit reuses the hole
        arena.free(0, 100)
        arena.free(128, 60)
        arena.free(192, 1)
        assert arena.free_bytes == 1024  # merged back into one block
        assert arena.alloc(1024) == 0
    finally:
        arena.close()


@pytest.fixture
async def engine(anyio_backend: str) -> AsyncIterator[tuple[EngineHost, str]]:
    host = EngineHost(make_settings(), Metrics())
    host.start()
    await eventually(host.backend.ready, lambda ready: ready[0], 30)  # warms up meanwhile
    path = str(Path(tempfile.mkdtemp()) / "engine.sock")
    server = EngineServer(host.backend, path)
    await server.start()
    try:
        yield host, path
    finally:
        await server.close()
        await host.close()


async def frontend(path: str, arena_bytes: int = 1 << 20) -> RemoteBackend:
    remote = RemoteBackend(path, arena_bytes)
    await remote.connect()
    return remote


def spec_of(host: EngineHost, config: dict[str, Any]) -> ModelSpec:
    name = "m" + str(abs(hash(str(config))) % 10**6)
    model = RNNConfig.model_validate(config)
    return host.catalog.register(name, model, lambda: seeded_weights(model))[0]


def job_for(config: RNNConfig, x: np.ndarray, **state: np.ndarray) -> Any:
    wire = {k: WireTensor(v.astype(np.float32), "float32", True) for k, v in state.items()}
    return validate_forward(config, Inputs(WireTensor(x.astype(np.float32), "float32", True),
                                           wire.get("h0"), wire.get("c0")))  # fmt: skip


@pytest.mark.parametrize("arena_bytes", [1 << 20, 64], ids=["shared-memory", "inline"])
async def test_remote_forward_equals_the_oracle(
    engine: tuple[EngineHost, str], arena_bytes: int
) -> None:
    """Through the arena, and (an arena too small for anything) inline in the frames."""
    host, path = engine
    remote = await frontend(path, arena_bytes)
    try:
        spec = spec_of(host, LSTM)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((6, 4, 3))
        h0, c0 = rng.standard_normal((2, 4, 2)), rng.standard_normal((2, 4, 5))
        result = await remote.forward(spec, job_for(spec.config, x, h0=h0, c0=c0))
        want = lstm_forward(seeded_params(LSTM), LSTM, x.astype(np.float32),
                            h0.astype(np.float32), c0.astype(np.float32))  # fmt: skip
        np.testing.assert_allclose(result.output, want[0], atol=1e-5)
        np.testing.assert_allclose(result.h_n, want[1], atol=1e-5)
        assert result.c_n is not None
        np.testing.assert_allclose(result.c_n, want[2], atol=1e-5)
        assert remote.arena.free_bytes == remote.arena.size  # every block given back
    finally:
        await remote.close()


LAYERED = {"mode": "LSTM", "input_size": 3, "hidden_size": 5, "embedding": {"num_embeddings": 7},
           "head": {"out_features": 2, "activation": "softmax", "on": "last_step"}}  # fmt: skip


@pytest.mark.parametrize("arena_bytes", [1 << 20, 64], ids=["shared-memory", "inline"])
async def test_token_ids_and_the_head_cross_the_socket(
    engine: tuple[EngineHost, str], arena_bytes: int
) -> None:
    from tests.oracle import model_forward, seeded_model_params

    host, path = engine
    remote = await frontend(path, arena_bytes)
    try:
        spec = spec_of(host, LAYERED)
        ids = np.random.default_rng(1).integers(0, 7, (6, 4))
        job = validate_forward(spec.config, Inputs(WireTensor(ids, "int64", True)))
        result = await remote.forward(spec, job)
        out, _, c_n, head = model_forward(seeded_model_params(LAYERED), LAYERED, ids)
        np.testing.assert_allclose(result.output, out, atol=1e-5)
        assert result.c_n is not None
        assert c_n is not None
        np.testing.assert_allclose(result.c_n, c_n, atol=1e-5)
        assert result.head is not None
        assert head is not None
        np.testing.assert_allclose(result.head, head, atol=1e-5)
    finally:
        await remote.close()


async def test_requests_of_two_frontends_share_forwards(engine: tuple[EngineHost, str]) -> None:
    host, path = engine
    a, b = await frontend(path), await frontend(path)
    try:
        spec = spec_of(host, {"input_size": 3, "hidden_size": 4})
        rng = np.random.default_rng(1)
        xs = [rng.standard_normal((5, 1, 3)) for _ in range(40)]
        results = await asyncio.gather(*(
            (a if i % 2 else b).forward(spec, job_for(spec.config, x)) for i, x in enumerate(xs)
        ))  # fmt: skip
        params = seeded_params({"input_size": 3, "hidden_size": 4})
        for x, result in zip(xs, results, strict=True):
            want, _ = forward(params, {"input_size": 3, "hidden_size": 4}, x)[:2]
            np.testing.assert_allclose(result.output, want, atol=1e-5)
        assert max(r.batch_sequences for r in results) > 1  # joined across the two
    finally:
        await a.close()
        await b.close()


async def test_a_session_continues_from_any_frontend(engine: tuple[EngineHost, str]) -> None:
    host, path = engine
    a, b = await frontend(path), await frontend(path)
    try:
        spec = spec_of(host, LSTM)
        rng = np.random.default_rng(2)
        x = rng.standard_normal((9, 2, 3))
        h0, c0 = rng.standard_normal((2, 2, 2)), rng.standard_normal((2, 2, 5))
        state0 = [WireTensor(v.astype(np.float32), "float32", True) for v in (h0, c0)]
        view = await a.open_session(spec, state0)
        outs = []
        for i, (lo, hi) in enumerate([(0, 4), (4, 5), (5, 9)]):
            side = (a, b)[i % 2]
            result, view = await side.chunk(view.id, spec, job_for(spec.config, x[lo:hi]))
            outs.append(result.output)
        assert view.steps == 9
        want = forward(seeded_params(LSTM), LSTM, x.astype(np.float32), h0.astype(np.float32),
                       c0.astype(np.float32))  # fmt: skip
        np.testing.assert_allclose(np.concatenate(outs), want[0], atol=1e-5)
        assert (await b.session(view.id)).steps == 9
        await b.close_session(view.id)
        with pytest.raises(SessionNotFound):
            await a.session(view.id)
    finally:
        await a.close()
        await b.close()


async def test_errors_keep_their_kind_and_fields(engine: tuple[EngineHost, str]) -> None:
    host, path = engine
    remote = await frontend(path)
    try:
        spec = spec_of(host, {"input_size": 3, "hidden_size": 4, "bidirectional": True})
        with pytest.raises(InvalidInput) as caught:
            await remote.open_session(spec, [])  # bidirectional models cannot stream
        assert caught.value.errors[0].loc == ("path", "name")
        assert "cannot stream" in caught.value.detail
        ready, _ = await remote.ready()
        assert ready
        assert remote.device == "cpu"
    finally:
        await remote.close()


async def test_an_unreachable_engine_is_a_503_not_a_hang(engine: tuple[EngineHost, str]) -> None:
    host, path = engine
    remote = await frontend(path)
    spec = spec_of(host, {"input_size": 3, "hidden_size": 4})
    assert remote._conn is not None
    assert remote._conn.transport is not None
    remote._conn.transport.close()
    await asyncio.sleep(0.05)
    from service.core.errors import NotReady

    with pytest.raises(NotReady):
        await remote.forward(spec, job_for(spec.config, np.zeros((2, 1, 3))))
    await remote.close()
