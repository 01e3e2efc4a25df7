"""RNNConfig rules, and the registry's cache: one build per key under concurrency, LRU bounds."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from service.core.errors import InvalidInput, ModelConflict, ModelNotFound
from service.core.metrics import Metrics
from service.core.schemas.config import RNNConfig
from service.engine.build import build_seeded
from tests.conftest import make_settings
from tests.support.helpers import Models


@given(st.integers(1, 9), st.integers(1, 9), st.integers(1, 3), st.booleans(), st.booleans())
def test_parameter_count_matches_torch(
    i: int, h: int, layers: int, bias: bool, bidir: bool
) -> None:
    config = RNNConfig(
        input_size=i, hidden_size=h, num_layers=layers, bias=bias, bidirectional=bidir
    )
    rnn = torch.nn.RNN(i, h, layers, bias=bias, bidirectional=bidir)
    assert config.parameter_count() == sum(p.numel() for p in rnn.parameters())


def test_canonical_key_ignores_spelling_of_defaults() -> None:
    a = RNNConfig.model_validate({"input_size": 3, "hidden_size": 4})
    b = RNNConfig.model_validate({"hidden_size": 4, "input_size": 3, "num_layers": 1, "dropout": 0})
    c = RNNConfig.model_validate({"input_size": 3, "hidden_size": 4, "seed": 1})
    assert a.canonical_key == b.canonical_key != c.canonical_key


def test_a_copy_with_other_fields_has_their_key() -> None:
    """A config copied with `update` is keyed by its own fields, not the original's cached key
    (else it would share the original's module)."""
    a = RNNConfig(input_size=3, hidden_size=4)
    key = a.canonical_key
    b = a.model_copy(update={"hidden_size": 8})
    assert b.hidden_size == 8
    assert b.canonical_key == RNNConfig(input_size=3, hidden_size=8).canonical_key != key
    assert a.model_copy().canonical_key == key == a.canonical_key


def test_seeded_build_equals_torch_and_leaves_global_rng_alone() -> None:
    config = RNNConfig(
        input_size=3, hidden_size=5, num_layers=2, bidirectional=True, seed=99, dtype="float64"
    )
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    module = build_seeded(config, torch.device("cpu"))
    after = torch.rand(1)
    assert before == after
    torch.manual_seed(99)
    ref = torch.nn.RNN(3, 5, 2, bidirectional=True)
    for name, value in ref.state_dict().items():
        assert torch.equal(module.state_dict()[name], value.double()), name
    assert not module.training
    assert all(not p.requires_grad for p in module.parameters())


def _registry(**overrides: object) -> tuple[Models, Metrics]:
    metrics = Metrics()
    return Models(make_settings(**overrides), metrics), metrics


def _events(metrics: Metrics, event: str) -> float:
    return (
        metrics.registry.get_sample_value("rnn_serve_registry_events_total", {"event": event})
        or 0.0
    )


def test_concurrent_first_requests_build_once() -> None:
    registry, metrics = _registry()
    config = RNNConfig(input_size=16, hidden_size=64, num_layers=3)
    start = threading.Barrier(8)

    def get() -> int:
        start.wait()
        return id(registry.inline_module(config))

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda _: get(), range(8)))
    assert len(set(ids)) == 1
    assert _events(metrics, "build") == 1

    registry.register("m", config)
    start = threading.Barrier(8)

    def get_named() -> int:
        start.wait()
        return id(registry.module("m"))

    with ThreadPoolExecutor(8) as pool:
        assert len(set(pool.map(lambda _: get_named(), range(8)))) == 1
    assert _events(metrics, "build") == 2


def test_inline_cache_is_lru_bounded() -> None:
    registry, metrics = _registry(inline_cache_size=2)
    configs = [RNNConfig(input_size=2, hidden_size=2, seed=s) for s in range(3)]
    first = registry.inline_module(configs[0])
    registry.inline_module(configs[1])
    assert registry.inline_module(configs[0]) is first  # refreshes 0: 1 is now the oldest
    registry.inline_module(configs[2])  # evicts 1
    assert registry.modules.loaded()[0] == 2
    assert _events(metrics, "eviction") == 1
    assert registry.inline_module(configs[0]) is first
    registry.inline_module(configs[1])  # rebuilt
    assert _events(metrics, "build") == 4


def test_register_conflict_limits_and_delete() -> None:
    registry, _ = _registry(max_hidden_size=8)
    config = RNNConfig(input_size=2, hidden_size=4)
    registry.register("m", config)
    with pytest.raises(ModelConflict):
        registry.register("m", RNNConfig(input_size=2, hidden_size=5))
    with pytest.raises(InvalidInput, match="at most 8"):
        registry.register("big", RNNConfig(input_size=2, hidden_size=9))
    registry.catalog.delete("m")
    with pytest.raises(ModelNotFound):
        registry.catalog.get("m")


def test_torch_threads_leave_a_core_to_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.engine import device

    monkeypatch.setattr(device, "usable_cpus", lambda: 8)
    assert device.torch_threads(make_settings()) == 7
    assert device.torch_threads(make_settings(torch_threads=3)) == 3
    monkeypatch.setattr(device, "usable_cpus", lambda: 1)
    assert device.torch_threads(make_settings()) == 1


def test_usable_cpus_follow_affinity_and_cgroup_quota(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from service.core import cpus as device

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    quota = tmp_path / "cpu.max"

    def fake_path(p: str) -> Path:
        return quota if p == "/sys/fs/cgroup/cpu.max" else Path(p)

    monkeypatch.setattr("service.core.cpus.Path", fake_path)
    quota.write_text("max 100000\n")
    assert device.usable_cpus() == 4  # affinity, not the 64 CPUs of the host
    quota.write_text("150000 100000\n")
    assert device.usable_cpus() == 2  # 1.5 CPUs of quota: 2 threads
    quota.write_text("50000 100000\n")
    assert device.usable_cpus() == 1
