"""Registered models and the cache of built modules.

Thread-safety: every map is guarded by one lock; a module is built at most once per key even when
many threads ask for it together (a per-key build lock, double-checked). Builds happen in the
engine's worker thread, never on the event loop.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from service.errors import InvalidInput, ModelConflict, ModelNotFound
from service.metrics import Metrics
from service.registry.build import build_seeded
from service.schemas.config import RNNConfig
from service.settings import Settings


@dataclass
class ModelEntry:
    """A registered model. `module` is None until first built (or after eviction)."""

    name: str
    config: RNNConfig
    module: nn.RNN | None = None
    build_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def loaded(self) -> bool:
        return self.module is not None


class Registry:
    """Named models plus an LRU of modules built for inline configs."""

    def __init__(self, settings: Settings, device: torch.device, metrics: Metrics) -> None:
        self.settings = settings
        self.device = device
        self._metrics = metrics
        self._lock = threading.Lock()
        self._models: dict[str, ModelEntry] = {}
        self._inline: OrderedDict[str, nn.RNN] = OrderedDict()
        self._inline_locks: dict[str, threading.Lock] = {}

    # --- limits -------------------------------------------------------------------------------
    def check_limits(
        self, config: RNNConfig, loc: tuple[str | int, ...] = ("body", "config")
    ) -> None:
        """The service's own bounds on model size (settings), reported as 422."""
        s = self.settings
        for name, value, limit in (
            ("input_size", config.input_size, s.max_input_size),
            ("hidden_size", config.hidden_size, s.max_hidden_size),
            ("num_layers", config.num_layers, s.max_num_layers),
        ):
            if value > limit:
                raise InvalidInput.at(
                    (*loc, name),
                    f"{name} must be at most {limit} on this server "
                    f"(RNN_SERVE_MAX_{name.upper()}), got {value}",
                )
        count = config.parameter_count()
        if count > s.max_parameters:
            raise InvalidInput.at(
                loc,
                f"the model would have {count} parameters; this server allows at most "
                f"{s.max_parameters} (RNN_SERVE_MAX_PARAMETERS)",
            )

    # --- named models -------------------------------------------------------------------------
    def register(self, name: str, config: RNNConfig) -> tuple[ModelEntry, bool]:
        """Register `name`; idempotent for the same config, ModelConflict for another."""
        self.check_limits(config)
        with self._lock:
            existing = self._models.get(name)
            if existing is not None:
                if existing.config != config:
                    raise ModelConflict(
                        f"model {name!r} is already registered with another config; "
                        "delete it first or choose another name"
                    )
                return existing, False
            entry = ModelEntry(name, config)
            self._models[name] = entry
            self._metrics.loaded_models.set(self._loaded_count())
            return entry, True

    def get(self, name: str) -> ModelEntry:
        with self._lock:
            entry = self._models.get(name)
        if entry is None:
            raise ModelNotFound(f"no model named {name!r} is registered")
        return entry

    def list(self) -> list[ModelEntry]:
        with self._lock:
            return sorted(self._models.values(), key=lambda e: e.name)

    def delete(self, name: str) -> None:
        with self._lock:
            if self._models.pop(name, None) is None:
                raise ModelNotFound(f"no model named {name!r} is registered")
            self._metrics.loaded_models.set(self._loaded_count())

    def module(self, entry: ModelEntry) -> nn.RNN:
        """The entry's module, built once on first use (call from the engine's worker)."""
        module = entry.module
        if module is not None:
            self._metrics.registry_events.labels("hit").inc()
            return module
        with entry.build_lock:
            if entry.module is None:
                self._metrics.registry_events.labels("miss").inc()
                entry.module = self._build(entry.config)
                with self._lock:
                    self._metrics.loaded_models.set(self._loaded_count())
            else:
                self._metrics.registry_events.labels("hit").inc()
            return entry.module

    # --- inline configs -----------------------------------------------------------------------
    def inline_module(self, config: RNNConfig) -> nn.RNN:
        """A module for an inline config, shared by every request with an equal config."""
        key = config.canonical_key()
        with self._lock:
            module = self._inline.get(key)
            if module is not None:
                self._inline.move_to_end(key)
                self._metrics.registry_events.labels("hit").inc()
                return module
            build_lock = self._inline_locks.setdefault(key, threading.Lock())
        with build_lock:
            with self._lock:
                module = self._inline.get(key)
            if module is not None:
                self._metrics.registry_events.labels("hit").inc()
                return module
            self._metrics.registry_events.labels("miss").inc()
            module = self._build(config)
            with self._lock:
                self._inline[key] = module
                self._inline_locks.pop(key, None)
                while len(self._inline) > self.settings.inline_cache_size:
                    self._inline.popitem(last=False)
                    self._metrics.registry_events.labels("eviction").inc()
                self._metrics.loaded_models.set(self._loaded_count())
            return module

    def inline_cached(self) -> int:
        with self._lock:
            return len(self._inline)

    # --- internals ----------------------------------------------------------------------------
    def _build(self, config: RNNConfig, builder: Callable[..., nn.RNN] = build_seeded) -> nn.RNN:
        self._metrics.registry_events.labels("build").inc()
        return builder(config, self.device)

    def _loaded_count(self) -> int:
        return len(self._inline) + sum(1 for e in self._models.values() if e.loaded)
