"""The on-disk repository: atomic writes, interrupted writes, versions, deletes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.catalog.folder import Repository
from service.core.schemas.config import RNNConfig

CONFIG = RNNConfig(input_size=2, hidden_size=3)


def test_create_is_whole_and_once(tmp_path: Path) -> None:
    repo = Repository(tmp_path)
    assert repo.create("m", CONFIG, b"weights-1")
    assert not repo.create("m", RNNConfig(input_size=5, hidden_size=5), b"other")
    stored = repo.read("m")
    assert stored is not None
    assert stored.config == CONFIG
    assert repo.read_weights("m") is not None
    assert repo.names() == ["m"]
    assert not any(p.name.startswith(".staging") and any(p.iterdir()) for p in tmp_path.iterdir())


def test_interrupted_weight_write_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = Repository(tmp_path)
    repo.create("m", CONFIG, b"old weights")
    before = repo.version("m")

    def crash(src: object, dst: object) -> None:
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        repo.replace_weights("m", b"new weights, never renamed into place")
    monkeypatch.undo()
    assert repo.read_weights("m")[0] == b"old weights"  # type: ignore[index]
    assert repo.version("m") == before
    assert sorted(os.listdir(tmp_path / "m")) == ["config.json", "weights.safetensors"]


def test_interrupted_create_leaves_no_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = Repository(tmp_path)

    def crash(src: object, dst: object) -> None:
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(os, "rename", crash)
    with pytest.raises(OSError, match="simulated crash"):
        repo.create("m", CONFIG, b"weights")
    monkeypatch.undo()
    assert repo.names() == []
    assert repo.read("m") is None


def test_version_changes_with_new_weights_and_vanishes_on_delete(tmp_path: Path) -> None:
    repo = Repository(tmp_path)
    repo.create("m", CONFIG, b"a")
    v1 = repo.version("m")
    repo.replace_weights("m", b"b")
    v2 = repo.version("m")
    assert v1 is not None
    assert v2 is not None
    assert v1[0] == v2[0]
    assert v1[1] != v2[1]
    assert repo.delete("m")
    assert repo.version("m") is None
    assert not repo.delete("m")
    assert repo.names() == []


@pytest.mark.parametrize("name", ["..", "../x", "a/b", ".staging", ""])
def test_folder_refuses_unsafe_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="invalid model name"):
        Repository(tmp_path).folder(name)
