"""What the catalog asks of its storage, held by both: a local folder and a real S3 bucket
(SeaweedFS). Every write is atomic, versions change with every write, and nothing half-written
is ever visible."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.catalog.cache import WeightsCache
from service.catalog.catalog import open_storage
from service.catalog.objects import ObjectRepository
from service.catalog.storage import ModelChanged, ModelStorage
from service.core.schemas.config import RNNConfig
from tests.conftest import make_settings
from tests.support import wait_until

CONFIG = RNNConfig(input_size=2, hidden_size=3)


@pytest.fixture
def storage(repository: str, tmp_path: Path) -> Iterator[ModelStorage]:
    opened = open_storage(make_settings(model_repository=repository, model_cache=tmp_path / "c"))
    yield opened
    opened.close()


def test_create_read_replace_delete(storage: ModelStorage) -> None:
    assert storage.names() == []
    assert storage.create("m", CONFIG, b"first")
    assert not storage.create("m", RNNConfig(input_size=5, hidden_size=5), b"other")  # taken
    stored = storage.read("m")
    assert stored is not None
    assert stored.config == CONFIG
    v1 = storage.version("m")
    assert v1 == stored.version
    got = storage.read_weights("m")
    assert got is not None
    assert got[0] == b"first"
    storage.replace_weights("m", b"second")
    v2 = storage.version("m")
    assert v2 is not None
    assert v2 != v1
    got = storage.read_weights("m", v2[0])
    assert got is not None
    assert got[0] == b"second"
    assert storage.usage() == (1, len(b"second"))
    assert storage.weights_size("m") == len(b"second")
    assert storage.names() == ["m"]
    assert storage.delete("m")
    assert not storage.delete("m")
    assert storage.version("m") is None
    assert storage.names() == []
    with pytest.raises(FileNotFoundError):
        storage.replace_weights("m", b"third")  # deleted: an upload does not bring it back


def test_weights_of_another_registration_are_never_read(storage: ModelStorage) -> None:
    storage.create("m", CONFIG, b"first")
    v1 = storage.version("m")
    assert v1 is not None
    storage.delete("m")
    storage.create("m", RNNConfig(input_size=4, hidden_size=4), b"another")
    with pytest.raises(ModelChanged):
        storage.read_weights("m", v1[0])


def test_generation_changes_with_every_write(storage: ModelStorage) -> None:
    seen = {storage.generation()}
    storage.create("m", CONFIG, b"1")
    seen.add(storage.generation())
    storage.replace_weights("m", b"2")
    seen.add(storage.generation())
    storage.delete("m")
    seen.add(storage.generation())
    assert len(seen) == 4


def test_a_second_replica_sees_every_change(repository: str, tmp_path: Path) -> None:
    settings = make_settings(model_repository=repository, model_cache=tmp_path / "a",
                             repository_recheck_s=0.1)  # fmt: skip
    a = open_storage(settings)
    b = open_storage(settings.model_copy(update={"model_cache": tmp_path / "b"}))
    a.create("m", CONFIG, b"first")
    a.replace_weights("m", b"second")

    wait_until(lambda: b.version("m") == a.version("m"), 10)
    got = b.read_weights("m")
    assert got is not None
    assert got[0] == b"second"
    a.delete("m")
    wait_until(lambda: b.version("m") is None, 10)


def test_object_store_cache_is_verified_and_bounded(s3_server: object, tmp_path: Path) -> None:
    from tests.support.s3_server import S3Server

    assert isinstance(s3_server, S3Server)
    cache = WeightsCache(tmp_path / "cache", max_bytes=10)
    repo = ObjectRepository(s3_server.url(), cache)
    repo.create("m", CONFIG, b"12345678")
    digest = next(p.name for p in (tmp_path / "cache").iterdir())
    (tmp_path / "cache" / digest).write_bytes(b"tampered")  # a damaged cache file
    got = repo.read_weights("m")
    assert got is not None
    assert got[0] == b"12345678"  # fetched again from the store, not served damaged
    repo.create("n", CONFIG, b"abcdefgh")
    assert sum(p.stat().st_size for p in (tmp_path / "cache").iterdir()) <= 10


def test_orphans_of_interrupted_uploads_are_removed_when_old(
    s3_server: object, tmp_path: Path
) -> None:
    from tests.support.s3_server import S3Server

    assert isinstance(s3_server, S3Server)
    repo = ObjectRepository(s3_server.url(), WeightsCache(tmp_path / "c", 1 << 20))
    repo.create("m", CONFIG, b"kept")
    repo._write_weights(b"an upload that never switched the manifest")
    assert repo.clean_orphans(older_than_s=3600) == []  # young: may be an upload in progress
    removed = repo.clean_orphans(older_than_s=0)
    assert len(removed) == 1
    got = repo.read_weights("m")
    assert got is not None
    assert got[0] == b"kept"


def test_credentials_from_a_named_profile(
    s3_server: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS_PROFILE and the AWS config files, as a developer's machine has them."""
    from tests.support.s3_server import KEY, SECRET, S3Server

    assert isinstance(s3_server, S3Server)
    (tmp_path / "credentials").write_text(
        f"[rnn]\naws_access_key_id = {KEY}\naws_secret_access_key = {SECRET}\n"
    )
    (tmp_path / "config").write_text("[profile rnn]\nregion = us-east-1\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_PROFILE", "rnn")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        monkeypatch.delenv(name)
    repo = ObjectRepository(s3_server.url(), WeightsCache(tmp_path / "c", 1 << 20))
    try:
        assert repo.create("m", CONFIG, b"through a profile")
        assert repo.names() == ["m"]
    finally:
        repo.close()


def test_an_unknown_scheme_is_a_settings_error() -> None:
    """An s3:// path is never taken for a folder named 's3:'; a scheme nobody serves is refused
    at start-up, naming the setting."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="expected a folder or an object store"):
        make_settings(model_repository="ftp://host/models")
    assert make_settings(model_repository="s3://bucket/prefix").model_repository.startswith("s3:")


@pytest.mark.parametrize(
    "url",
    [
        "s3://",
        "s3:///prefix",
        "s3://models//double",
        "s3://models/../x",
        "s3://models/a/./b",
        "s3://models/a b/x",
        "s3://models/%C3%BC%2F",
        "s3://models/ü",
        "s3://Upper/x",
    ],
)
def test_odd_object_store_urls_are_a_settings_error(url: str) -> None:
    """A repository URL whose keys a store would write under another name (`..`, an empty
    segment, an escape) is refused when the settings are read, naming why; the command line
    says so in one line naming RNN_SERVE_MODEL_REPOSITORY, not a traceback at start-up."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="expected"):
        make_settings(model_repository=url)


def test_an_odd_url_is_one_line_from_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    from service.__main__ import settings_from

    with pytest.raises(SystemExit) as exit_:
        settings_from(["--model-repository", "s3://models/../x"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "RNN_SERVE_MODEL_REPOSITORY" in err[0], err
    assert "'..'" in err[0], err


@pytest.mark.parametrize("url", ["s3://models", "s3://models/", "s3://my-models.v2/a/b_c/d-1/"])
def test_plain_object_store_urls_are_taken(url: str) -> None:
    assert make_settings(model_repository=url).model_repository == url
