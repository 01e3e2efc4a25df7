"""A model as every layer names it: an immutable `ModelSpec`."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from service.catalog.storage import Version
from service.core.schemas.config import RNNConfig


@dataclass(frozen=True)
class ModelSpec:
    """A model as the engine needs it, as one immutable value: its name, config, how to build
    it (from the repository, or seeded for an inline config) and its batching key."""

    name: str  # the registered name; for an inline config, its canonical key
    config: RNNConfig
    version: Version | None  # of the repository's files; None for an inline config
    key: Hashable = field(init=False, compare=False)

    def __post_init__(self) -> None:
        # The batching key, spelled here only: jobs with equal keys may share one forward.
        key = ("inline", self.config.canonical_key) if self.inline else ("model", self.name)
        object.__setattr__(self, "key", (*key, self.config.canonical_key))

    @property
    def inline(self) -> bool:
        return self.version is None

    @classmethod
    def of_inline(cls, config: RNNConfig) -> ModelSpec:
        return cls(config.canonical_key, config, None)
