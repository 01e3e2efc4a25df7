"""The catalog's storage seam: what `Catalog` asks of wherever models are kept, and the values
every store speaks (stamps, versions, a stored model, and the two ways a read can fail).

`Repository` (a local folder, `service.catalog.folder`) and `ObjectRepository` (an object
store, `service.catalog.objects`) implement it; `open_storage` picks one from
`RNN_SERVE_MODEL_REPOSITORY`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from service.core.schemas.config import RNNConfig

# (inode, mtime_ns, size) of config.json and of weights.safetensors (None when absent)
FileStamp = tuple[int | str, ...]  # a file's (inode, mtime_ns, size); an object's (etag,)
Version = tuple[FileStamp, FileStamp | None]


@dataclass(frozen=True)
class StoredModel:
    config: RNNConfig
    version: Version


class CorruptModel(Exception):
    """A folder in the repository whose config.json cannot be read as an RNN config."""


class ModelChanged(Exception):
    """The model's files changed while they were being read (deleted, or registered anew)."""


class ModelStorage(Protocol):
    """Every write is atomic (a reader sees the old model or the new, never a mix); `version`
    and `generation` change with every write, so that replicas sharing the store see it."""

    def names(self) -> list[str]: ...

    def generation(self, not_before: float | None = None) -> FileStamp | None:
        """The store's stamp as of a moment after `not_before` (a perf_counter reading: when
        the request asking had arrived), or as of now without one."""
        ...

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
