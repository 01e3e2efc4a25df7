"""The folder's one-stat check, shared by the requests that arrived before it: sharing is exact.

A change that a client saw finish finished before that client's next request arrived, so a stat
made after a request arrived sees every change the request's client can know of. Here two
replicas (two Repository objects, two catalogs) share one folder, and the arrival times are the
perf_counter readings the HTTP protocol stamps a request with.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from service.catalog.catalog import Catalog
from service.catalog.folder import Repository
from service.core.errors import ModelNotFound
from service.core.metrics import Metrics
from service.core.schemas.config import RNNConfig
from tests.conftest import make_settings

CONFIG = RNNConfig(input_size=2, hidden_size=3)


def _counting_stats(monkeypatch: pytest.MonkeyPatch, path: str) -> list[str]:
    """The stats of `path` made from now on."""
    seen: list[str] = []
    real = os.stat

    def stat(p: object, *args: object, **kwargs: object) -> os.stat_result:
        if str(p) == path:
            seen.append(str(p))
        return real(p, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", stat)
    return seen


def test_requests_that_arrived_before_a_stat_share_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = Repository(tmp_path)
    repo.create("m", CONFIG, b"weights")
    stats = _counting_stats(monkeypatch, str(tmp_path / ".generation"))
    arrived = [time.perf_counter() for _ in range(3)]  # three requests read in one pass
    first = repo.generation(arrived[0])
    assert [repo.generation(t) for t in arrived[1:]] == [first, first]
    assert len(stats) == 1  # one stat for the three
    later = time.perf_counter()  # a request that arrived after that stat: a stat of its own
    assert repo.generation(later) == first
    assert len(stats) == 2
    repo.generation()  # no arrival time: always a stat
    assert len(stats) == 3


def test_a_change_another_replica_finished_is_seen_by_every_request_that_arrived_after_it(
    tmp_path: Path,
) -> None:
    settings = make_settings(model_repository=tmp_path)
    reader, writer = Catalog(settings, Metrics()), Repository(tmp_path)
    try:
        writer.create("m", CONFIG, b"weights")
        before = time.perf_counter()  # arrived before the change below
        spec = reader.get("m", before)
        assert writer.delete("m")  # the other replica's delete: done, its client told
        after = time.perf_counter()  # the client's next request, on this replica
        with pytest.raises(ModelNotFound):
            reader.get("m", after)
        with pytest.raises(ModelNotFound):
            reader.get("m", before)  # the shared stat was made after the delete, too
        writer.create("m", RNNConfig(input_size=4, hidden_size=3), b"other weights")
        again = reader.get("m", time.perf_counter())
        assert again.config.input_size == 4
        assert again.version != spec.version
    finally:
        reader.close()
