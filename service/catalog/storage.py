"""The catalog's storage seam: what `Catalog` asks of wherever models are kept.

`Repository` (a local folder, `service.catalog.repository`) and `ObjectRepository` (an object
store, `service.catalog.objects`) implement it; `open_storage` picks one from
`RNN_SERVE_MODEL_REPOSITORY`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from service.catalog.cache import WeightsCache
from service.catalog.objects import ObjectRepository, is_object_url
from service.catalog.repository import FileStamp, Repository, StoredModel, Version
from service.schemas.config import RNNConfig
from service.settings import Settings


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

    def close(self) -> None:
        """Stop whatever follows the store in the background."""
        ...


def open_storage(settings: Settings) -> ModelStorage:
    """The repository RNN_SERVE_MODEL_REPOSITORY names: an object store's URL, or a folder."""
    location = settings.model_repository
    if is_object_url(location):
        cache = WeightsCache(settings.model_cache, settings.model_cache_bytes)
        return ObjectRepository(location, cache, settings.repository_recheck_s)
    return Repository(Path(location))
