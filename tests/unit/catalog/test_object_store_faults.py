"""The object-store repository when the store misbehaves: a store that never answers, weights
deleted behind the server, a key that may not delete, manifests this version cannot parse.
Against a real SeaweedFS (and a real socket that never answers)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from service.app import create_app
from service.catalog import catalog as catalog_module
from service.catalog.cache import WeightsCache
from service.catalog.catalog import Catalog
from service.catalog.objects import ObjectRepository
from service.catalog.storage import CorruptModel
from service.core.errors import NotReady, StorageUnavailable
from service.core.metrics import Metrics
from service.core.schemas.config import RNNConfig
from service.runtime.host import register_default
from tests.conftest import make_settings, open_client
from tests.support.s3_server import BUCKET, READ_ONLY, S3Server

CONFIG = RNNConfig(input_size=2, hidden_size=3)


@pytest.fixture
def silent_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A loopback server that accepts connections and never answers a byte."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
    for name, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "k",
                        "AWS_SECRET_ACCESS_KEY": "s", "AWS_REGION": "us-east-1",
                        "AWS_ALLOW_HTTP": "true"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    try:
        yield endpoint
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()


def _repo(url: str, tmp_path: Path) -> ObjectRepository:
    return ObjectRepository(url, WeightsCache(tmp_path / "cache", 1 << 30), recheck_s=0.2)


@pytest.mark.anyio
async def test_a_hung_store_never_holds_the_event_loop(
    silent_endpoint: str, tmp_path: Path, anyio_backend: str
) -> None:
    """Before the first index load, a lookup on the event loop is a 503 at once (it says the
    repository has not been read yet: no store call was made on the loop), and the server
    answers its health check while its forwards are refused."""
    repo = _repo("s3://models/hung", tmp_path)
    try:
        with pytest.raises(StorageUnavailable, match="has not been read yet"):
            repo.version("default")
    finally:
        repo.close()

    settings = make_settings(model_repository="s3://models/hung", model_cache=tmp_path / "c")
    app = create_app(settings)
    async with (
        LifespanManager(app, startup_timeout=60) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(manager.app), base_url="http://t") as c,
    ):
        body = {"input": [[0.0] * 10]}
        forward, health = await asyncio.gather(
            c.post("/v1/models/default/forward", json=body), c.get("/healthz")
        )
        assert health.status_code == 200, health.text
        assert forward.status_code == 503, forward.text
        assert forward.json()["type"].endswith("storage-unavailable"), forward.text
        assert "has not been read yet" in forward.json()["detail"], forward.text
        ready = await c.get("/readyz")
        assert ready.status_code == 503


def _objects(s3: S3Server, prefix: str) -> list[str]:
    listing = s3.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix + "/")
    return [str(o["Key"]) for o in listing.get("Contents", [])]


@pytest.mark.anyio
async def test_weights_deleted_behind_the_server_are_503_naming_the_model(
    s3_server: S3Server, tmp_path: Path, anyio_backend: str
) -> None:
    url = s3_server.url()
    prefix = url.removeprefix(f"s3://{BUCKET}/")
    async for a in open_client(make_settings(model_repository=url, model_cache=tmp_path / "a")):
        r = await a.post("/v1/models", json={"name": "m", "config": CONFIG.model_dump()})
        assert r.status_code == 201, r.text
    manifest = s3_server.client().get_object(Bucket=BUCKET, Key=f"{prefix}/models/m/manifest.json")
    digest = orjson.loads(manifest["Body"].read())["weights"]
    s3_server.client().delete_object(Bucket=BUCKET, Key=f"{prefix}/weights/{digest}.safetensors")
    # another replica, with no cached copy
    async for b in open_client(make_settings(model_repository=url, model_cache=tmp_path / "b")):
        for r in (
            await b.post("/v1/models/m/forward", json={"input": [[0.1, 0.2]]}),
            await b.get("/v1/models/m/weights"),
        ):
            assert r.status_code == 503, r.text
            assert r.json()["type"].endswith("storage-unavailable"), r.text
            assert "weights of model 'm' are missing" in r.json()["detail"], r.text
        assert (await b.post("/v1/models/default/forward", json={"input": [[0.0] * 10]})).is_success


def test_a_key_that_may_not_delete_is_still_ready(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Orphan cleanup is best effort: with a read-only key, the DELETE is refused, logged, and
    the repository loads (readiness does not wait on it forever)."""
    url = s3_server.url()
    prefix = url.removeprefix(f"s3://{BUCKET}/")
    writer = _repo(url, tmp_path / "w")
    try:
        writer.create("m", CONFIG, b"weights of m")
    finally:
        writer.close()
    orphan = f"{prefix}/weights/{'0' * 64}.safetensors"
    s3_server.client().put_object(Bucket=BUCKET, Key=orphan, Body=b"an interrupted upload")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", READ_ONLY[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", READ_ONLY[1])
    monkeypatch.setattr(catalog_module, "ORPHAN_AGE_S", 0.0)
    settings = make_settings(model_repository=url, model_cache=tmp_path / "r")
    catalog = Catalog(settings, Metrics())
    try:
        assert catalog.load_all() == ["m"]  # it did not raise: the refused DELETE was skipped
    finally:
        catalog.close()
    assert orphan in _objects(s3_server, prefix)  # (the read-only key really could not)


def _write_manifest(s3: S3Server, prefix: str, name: str, body: bytes) -> None:
    s3.client().put_object(Bucket=BUCKET, Key=f"{prefix}/models/{name}/manifest.json", Body=body)


def _bump(s3: S3Server, prefix: str) -> None:
    s3.client().put_object(Bucket=BUCKET, Key=f"{prefix}/meta/generation", Body=b"by hand")


def test_a_manifest_this_version_cannot_parse_keeps_its_weights(
    s3_server: S3Server, tmp_path: Path
) -> None:
    """A newer writer's manifest (an extra config key): its weights are in use, never removed
    as an orphan; the model is reported unreadable (by lookup and by registration), not absent
    and not 'changed concurrently'."""
    url = s3_server.url()
    prefix = url.removeprefix(f"s3://{BUCKET}/")
    repo = _repo(url, tmp_path / "a")
    try:
        repo.create("m", CONFIG, b"weights of m")
        key = f"{prefix}/models/m/manifest.json"
        manifest: dict[str, Any] = orjson.loads(
            s3_server.client().get_object(Bucket=BUCKET, Key=key)["Body"].read()
        )
        manifest["config"]["future_knob"] = 1
        _write_manifest(s3_server, prefix, "m", orjson.dumps(manifest))
        _bump(s3_server, prefix)
    finally:
        repo.close()
    weights = f"{prefix}/weights/{manifest['weights']}.safetensors"

    other = _repo(url, tmp_path / "b")
    try:
        assert other.clean_orphans(older_than_s=0) == []
        assert weights in _objects(s3_server, prefix)
        assert other.names() == ["m"]
        assert other.version("m") is not None
        with pytest.raises(CorruptModel, match="future_knob"):
            other.read("m")
        catalog = Catalog(make_settings(model_repository=url), Metrics(), storage=other)
        with pytest.raises(NotReady, match=r"unreadable config.*future_knob"):
            catalog.register("m", CONFIG, lambda: b"seeded")
        with pytest.raises(NotReady, match="unreadable config"):
            catalog.get("m")
    finally:
        other.close()


def test_a_manifest_that_is_not_even_json_stops_every_removal(
    s3_server: S3Server, tmp_path: Path
) -> None:
    """When a manifest cannot be read at all, the weights it names are unknown: no weights
    object is removed, not even a true orphan, until it is fixed or deleted."""
    url = s3_server.url()
    prefix = url.removeprefix(f"s3://{BUCKET}/")
    repo = _repo(url, tmp_path / "a")
    try:
        repo.create("m", CONFIG, b"weights of m")
        orphan = f"{prefix}/weights/{'1' * 64}.safetensors"
        s3_server.client().put_object(Bucket=BUCKET, Key=orphan, Body=b"left behind")
        _write_manifest(s3_server, prefix, "broken", b"{not json")
        _bump(s3_server, prefix)
        assert repo.clean_orphans(older_than_s=0) == []
        assert orphan in _objects(s3_server, prefix)
        s3_server.client().delete_object(Bucket=BUCKET, Key=f"{prefix}/models/broken/manifest.json")
        _bump(s3_server, prefix)
        assert repo.clean_orphans(older_than_s=0) == [orphan.removeprefix(prefix + "/")]
        assert repo.read_weights("m") is not None
    finally:
        repo.close()


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def damaged_manifests(draw: st.DrawFn, digest: str) -> bytes:
    """What a newer writer, a hand edit or a torn write may leave in a manifest."""
    good: dict[str, Any] = {"config": CONFIG.model_dump(mode="json"), "weights": digest,
                            "size": 12}  # fmt: skip
    kind = draw(st.sampled_from(["extra-config-key", "extra-key", "bad-value", "drop", "bytes"]))
    if kind == "extra-config-key":
        good["config"][draw(st.text(min_size=1, max_size=8))] = draw(_JSON)
    elif kind == "extra-key":
        good[draw(st.sampled_from(["format", "x", "weights_v2"]))] = draw(_JSON)
    elif kind == "bad-value":
        good["config"][draw(st.sampled_from(sorted(good["config"])))] = draw(_JSON)
    elif kind == "drop":
        good.pop(draw(st.sampled_from(["config", "size"])))
    else:
        raw = orjson.dumps(good)
        return raw[: draw(st.integers(0, len(raw) - 1))] + draw(st.binary(max_size=4))
    return orjson.dumps(good)


@pytest.mark.fuzz
def test_no_manifest_damage_ever_loses_the_weights_it_names(
    s3_server: S3Server, tmp_path: Path
) -> None:
    """Whatever a manifest holds, the weights it names survive orphan cleanup, and its model is
    either served as written or reported unreadable, never taken for absent."""
    url = s3_server.url()
    prefix = url.removeprefix(f"s3://{BUCKET}/")
    repo = _repo(url, tmp_path / "a")
    try:
        repo.create("m", CONFIG, b"weights of m")
        key = f"{prefix}/models/m/manifest.json"
        digest = orjson.loads(s3_server.client().get_object(Bucket=BUCKET, Key=key)["Body"].read())[
            "weights"
        ]
        weights = f"{prefix}/weights/{digest}.safetensors"

        @given(manifest=damaged_manifests(digest))
        @hypothesis_settings(max_examples=25, deadline=None,
                             suppress_health_check=list(HealthCheck))  # fmt: skip
        def damage(manifest: bytes) -> None:
            _write_manifest(s3_server, prefix, "m", manifest)
            assert repo.clean_orphans(older_than_s=0) == []
            assert weights in _objects(s3_server, prefix)
            assert "m" in repo.names()
            try:
                stored = repo.read("m")
            except CorruptModel:
                return
            assert stored is not None  # parsed after all: served as written
            assert repo.read_weights("m") is not None

        damage()
    finally:
        repo.close()


@pytest.mark.parametrize("order", ["a-first", "b-first"])
def test_replicas_seeding_one_empty_bucket_both_serve_the_default(
    s3_server: S3Server, tmp_path: Path, order: str
) -> None:
    """Two replicas start on an empty bucket and both register the default model. The one whose
    conditional write loses serves the winner's model at once, before its index follower would
    have seen it (here it never would: it rechecks once an hour)."""
    url = s3_server.url()

    def replica(name: str) -> Catalog:
        return Catalog(
            make_settings(
                model_repository=url, model_cache=tmp_path / name, repository_recheck_s=3600.0
            ),
            Metrics(),
        )

    catalogs = [replica("a"), replica("b")]
    try:
        for catalog in catalogs:
            assert catalog.load_all() == []  # both read the empty bucket before either writes
        first, second = catalogs if order == "a-first" else catalogs[::-1]
        settings = first.settings
        won = register_default(first, settings)
        lost = register_default(second, settings)
        assert lost.version == won.version
        assert lost.config == won.config == settings.default_model
        assert second.read_weights(lost) == first.read_weights(won)
    finally:
        for catalog in catalogs:
            catalog.close()
