"""The engine's cache of built modules, on the serving device.

- One LRU bounded by the bytes of the modules' parameters (`max_loaded_bytes`) and, for inline
  configs, by count (`inline_cache_size`). Dropping one loses nothing: it is rebuilt from the
  catalog (or its seed) on next use.
- A module is never changed in place: new weights (a new version in the catalog) build a new
  module that replaces the old in the cache, so a forward sees the old weights or the new, never
  a mix.
- Thread-safety: one lock guards the map; a per-key build lock makes concurrent first requests
  build once. Building touches disk and torch: call off the event loop (the engine's worker).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from service.catalog.catalog import Catalog
from service.catalog.spec import ModelSpec
from service.catalog.storage import Version
from service.core.errors import InvalidInput, ModelConflict, NotReady
from service.core.metrics import Metrics
from service.core.settings import Settings
from service.engine.build import Model, build_seeded
from service.engine.weights import module_from_weights, parse_weights


@dataclass(frozen=True)
class _Built:
    module: Model
    nbytes: int
    version: Version | None  # None for inline modules


def _nbytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def _key(spec: ModelSpec) -> str:
    return f"inline:{spec.config.canonical_key}" if spec.inline else f"model:{spec.name}"


class ModuleCache:
    def __init__(
        self, settings: Settings, catalog: Catalog, device: torch.device, metrics: Metrics
    ) -> None:
        self.settings, self.catalog, self.device = settings, catalog, device
        self._metrics = metrics
        self._lock = threading.Lock()
        self._built: OrderedDict[str, _Built] = OrderedDict()
        self._build_locks: dict[str, threading.Lock] = {}

    def module_for(self, spec: ModelSpec) -> Model:
        """The engine's one way to a module: seeded for inline configs, else the catalog's
        current version of the model, built or reloaded if need be. A request validated
        against a config that was since replaced by another is refused, not run."""
        if not spec.inline:
            current = self.catalog.get(spec.name)  # the repository's version now (two stats)
            if current.config != spec.config:
                raise ModelConflict(
                    f"model {spec.name!r} was replaced by another config; send it again"
                )
            spec = current
        key = _key(spec)
        built = self._cached(key, spec.version)
        if built is not None:
            return built
        with self._build_lock(key):
            if not spec.inline:
                spec = self.catalog.get(spec.name)
            built = self._cached(key, spec.version)
            if built is not None:
                return built
            self._metrics.registry_events.labels("miss").inc()
            module, version = self._build(spec)
            self._insert(key, _Built(module, _nbytes(module), version))
            return module

    def _build(self, spec: ModelSpec) -> tuple[Model, Version | None]:
        self._metrics.registry_events.labels("build").inc()
        if spec.inline:
            return build_seeded(spec.config, self.device), None
        assert spec.version is not None  # registered models always have one
        stored = self.catalog.read_weights(spec)
        try:
            if stored is None:
                return build_seeded(spec.config, self.device), (spec.version[0], None)
            data, weights_version = stored
            tensors = parse_weights(data, spec.config)
            module = module_from_weights(spec.config, tensors, self.device)
        except InvalidInput as exc:
            raise NotReady(
                f"model {spec.name!r} cannot be loaded from the repository: {exc.detail}"
            ) from None
        return module, (spec.version[0], weights_version)

    def is_built(self, spec: ModelSpec) -> bool:
        """Whether the module for this version of the model is built now (no disk access)."""
        with self._lock:
            built = self._built.get(_key(spec))
        return built is not None and built.version == spec.version

    def unload(self, spec: ModelSpec) -> bool:
        """Drop the model's built module from the device (the next request builds it again)."""
        with self._lock:
            removed = self._built.pop(_key(spec), None) is not None
            if removed:
                self._publish()
        if removed and self.device.type == "cuda":
            torch.cuda.empty_cache()
        return removed

    def forget(self, name: str) -> None:
        """A deleted model: drop its module now rather than when it would be evicted."""
        with self._lock:
            if self._built.pop(f"model:{name}", None) is not None:
                self._build_locks.pop(f"model:{name}", None)
                self._publish()

    def loaded(self) -> tuple[int, int]:
        """(modules built, bytes of their parameters)."""
        with self._lock:
            return len(self._built), sum(b.nbytes for b in self._built.values())

    # --- internals ----------------------------------------------------------------------------
    def _cached(self, key: str, version: Version | None) -> Model | None:
        """The built module for `key` if it is of `version` (None for inline modules)."""
        with self._lock:
            built = self._built.get(key)
            if built is None or built.version != version:
                return None  # stale (newer files in the repository): the next build replaces it
            self._built.move_to_end(key)
        self._metrics.registry_events.labels("hit").inc()
        return built.module

    def _build_lock(self, key: str) -> threading.Lock:
        with self._lock:
            return self._build_locks.setdefault(key, threading.Lock())

    def _insert(self, key: str, built: _Built) -> None:
        """Cache `built` as the newest entry, then evict the least recently used past the bounds."""
        with self._lock:
            self._built[key] = built
            self._built.move_to_end(key)
            budget = self.settings.max_loaded_bytes
            while len(self._built) > 1 and sum(b.nbytes for b in self._built.values()) > budget:
                self._evict_oldest(lambda k: True)
            while (
                sum(k.startswith("inline:") for k in self._built) > self.settings.inline_cache_size
            ):
                self._evict_oldest(lambda k: k.startswith("inline:"))
            self._publish()

    def _publish(self) -> None:  # caller holds the lock
        """The gauges of built modules, set where they change (not when /metrics is read: with
        several processes, the one that answers /metrics is not the one that builds)."""
        nbytes = sum(b.nbytes for b in self._built.values())
        self._metrics.loaded_models.set(len(self._built))
        self._metrics.loaded_parameter_bytes.set(nbytes)
        if self.device.type != "cuda":  # on CUDA, the engine reads torch's allocator instead
            self._metrics.device_memory.set(nbytes)

    def _evict_oldest(self, eligible: Callable[[str], bool]) -> None:  # caller holds the lock
        victim = next(k for k in self._built if eligible(k))
        del self._built[victim]
        self._build_locks.pop(victim, None)
        self._metrics.registry_events.labels("eviction").inc()
