"""The catalog's storage seam: what `Catalog` asks of wherever models are kept.

`Repository` (a local folder, `service.catalog.repository`) is the one implementation;
`open_storage` picks it from `RNN_SERVE_MODEL_REPOSITORY`. Another store (object storage) is
another class with these methods, and another branch in `open_storage`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from service.catalog.repository import FileStamp, Repository, StoredModel, Version
from service.schemas.config import RNNConfig


class ModelStorage(Protocol):
    """Every write is atomic (a reader sees the old model or the new, never a mix); `version`
    and `generation` change with every write, so that replicas sharing the store see it."""

    def names(self) -> list[str]: ...

    def generation(self) -> FileStamp | None: ...

    def version(self, name: str) -> Version | None: ...

    def read(self, name: str) -> StoredModel | None: ...

    def read_weights(
        self, name: str, config: FileStamp | None = None
    ) -> tuple[bytes, FileStamp] | None: ...

    def create(self, name: str, config: RNNConfig, weights: bytes) -> bool: ...

    def replace_weights(self, name: str, weights: bytes) -> None: ...

    def usage(self) -> tuple[int, int]: ...

    def weights_size(self, name: str) -> int: ...

    def clean_orphans(self, older_than_s: float) -> list[str]: ...

    def delete(self, name: str) -> bool: ...


def open_storage(location: Path) -> ModelStorage:
    return Repository(location)
