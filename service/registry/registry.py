"""Registered models (durable, in the repository) and the cache of built modules.

- Models live on disk (`Repository`); memory holds what was last seen there. Every lookup checks
  the repository's version (two stats), so models registered, re-uploaded or deleted by another
  replica sharing the folder are served, reloaded or refused without a restart.
- Built modules sit in one LRU bounded by the bytes of their parameters (`max_loaded_bytes`) and,
  for inline configs, by count (`inline_cache_size`). Dropping one loses nothing: it is rebuilt
  from the repository (or its seed) on next use.
- A module is never changed in place: new weights build a new module that replaces the old in the
  cache, so a forward sees the old weights or the new, never a mix.
- Thread-safety: one lock guards the maps; a per-key build lock makes concurrent first requests
  build once. Methods that touch disk or torch run off the event loop (engine worker or a thread).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from service.errors import (
    InvalidInput,
    Loc,
    ModelConflict,
    ModelNotFound,
    NotReady,
    StorageFull,
    StorageUnavailable,
)
from service.metrics import Metrics
from service.registry.build import build_seeded
from service.registry.repository import (
    CorruptModel,
    FileStamp,
    ModelChanged,
    Repository,
    Version,
)
from service.registry.weights import module_from_weights, parse_weights, weights_bytes
from service.schemas.config import RNNConfig
from service.settings import Settings

log = logging.getLogger("rnn_serve.registry")
ORPHAN_AGE_S = 60.0  # a temporary file this old belongs to no write in progress


@contextlib.contextmanager
def _storage(what: str) -> Iterator[None]:
    """The repository's I/O errors as domain errors: 507 when the disk is full, 503 when it
    cannot be written; nothing was changed either way (every write is atomic)."""
    try:
        yield
    except FileNotFoundError:
        raise
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFull(
                f"{what}: the repository's disk is full; nothing was changed"
            ) from None
        log.error("%s failed: %s", what, exc)
        raise StorageUnavailable(
            f"{what}: the repository cannot be written ({reason}); nothing was changed",
            retry_after=30,
        ) from None


_CPU = torch.device("cpu")


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


@dataclass(frozen=True)
class _Built:
    module: nn.RNNBase
    nbytes: int
    version: Version | None  # None for inline modules


def _nbytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


class Registry:
    def __init__(
        self, settings: Settings, device: torch.device, metrics: Metrics, serving: bool = True
    ) -> None:
        self.settings = settings
        self.device = device
        # A front-end process's registry reads and writes the repository but builds no module
        # for serving (the engine process does): an upload is checked, not kept built.
        self.serving = serving
        self.repo = Repository(settings.model_repository)
        self._metrics = metrics
        self._lock = threading.Lock()
        self._models: dict[str, ModelSpec] = {}
        self._built: OrderedDict[str, _Built] = OrderedDict()
        self._build_locks: dict[str, threading.Lock] = {}
        # name -> (repository generation, monotonic time) when its files were last checked
        self._verified: dict[str, tuple[FileStamp, float]] = {}

    # --- limits -------------------------------------------------------------------------------
    def check_limits(self, config: RNNConfig, loc: Loc = ("body", "config")) -> None:
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

    # --- named models (disk I/O: call off the event loop, except get()) ------------------------
    def load_all(self) -> list[str]:
        """Register every model in the repository (at start-up), after removing what
        interrupted writes left behind."""
        for leftover in self.repo.clean_orphans(older_than_s=ORPHAN_AGE_S):
            log.warning(
                "removed %s, left in the model repository by an interrupted write", leftover
            )
        for name in self.repo.names():
            try:
                self.get(name)
            except NotReady as exc:
                log.warning("skipping %s: %s", name, exc.detail)
        return sorted(self._models)

    def register(self, name: str, config: RNNConfig) -> tuple[ModelSpec, bool]:
        """Register `name` durably; idempotent for the same config, ModelConflict for another."""
        self.check_limits(config)
        existing = self._lookup(name)
        if existing is None:
            seeded = weights_bytes(build_seeded(config, _CPU))
            self._check_quota(new_models=1, new_bytes=len(seeded))
            with _storage(f"registering model {name!r}"):
                created = self.repo.create(name, config, seeded)
            if created:
                self._metrics.registry_events.labels("register").inc()
            entry = self._lookup(name)  # ours, or another request's or replica's meanwhile
            if entry is None:  # deleted as soon as it was made
                raise ModelConflict(f"model {name!r} was changed concurrently; try again")
            if created:
                return entry, True
            existing = entry
        if existing.config != config:
            raise ModelConflict(
                f"model {name!r} is already registered with another config; "
                "delete it first or choose another name"
            )
        return existing, False

    def get(self, name: str) -> ModelSpec:
        """The model as the repository has it now (one stat when nothing changed)."""
        entry = self._lookup(name)
        if entry is None:
            raise ModelNotFound(f"no model named {name!r} is registered")
        return entry

    def list(self) -> list[ModelSpec]:
        entries = []
        for name in self.repo.names():
            try:
                entries.append(self.get(name))
            except (ModelNotFound, NotReady):
                continue
        with self._lock:
            for gone in set(self._models) - {e.name for e in entries}:
                self._forget(gone)
        return entries

    def delete(self, name: str) -> None:
        if name == self.settings.default_model_name:
            raise ModelConflict(
                f"model {name!r} is this server's default model (RNN_SERVE_DEFAULT_MODEL_NAME) "
                "and cannot be deleted; upload new weights to change it"
            )
        with _storage(f"deleting model {name!r}"):
            deleted = self.repo.delete(name)
        with self._lock:
            self._forget(name)
        if not deleted:
            raise ModelNotFound(f"no model named {name!r} is registered")
        self._metrics.registry_events.labels("delete").inc()
        self._metrics.forget_model(name)

    def forget_metrics(self, name: str) -> None:
        """Drop a deleted model's metric series (the engine process's, where it has its own)."""
        self._metrics.forget_model(name)

    def upload(self, name: str, data: bytes) -> ModelSpec:
        """Check, build, then durably replace a model's weights; the old ones serve until then."""
        entry = self.get(name)
        module = module_from_weights(entry.config, parse_weights(data, entry.config), self.device)
        self._check_quota(new_models=0, new_bytes=len(data) - self.repo.weights_size(name))
        try:
            with _storage(f"uploading the weights of model {name!r}"):
                self.repo.replace_weights(name, data)
        except FileNotFoundError:
            raise ModelNotFound(f"model {name!r} was deleted during the upload") from None
        entry = self.get(name)
        if self.serving:
            self._insert(f"model:{name}", _Built(module, _nbytes(module), entry.version))
        self._metrics.registry_events.labels("upload").inc()
        return entry

    def export(self, name: str) -> bytes:
        """The current weights as a safetensors file (the stored file, byte for byte)."""
        self.get(name)
        stored = self.repo.read_weights(name)
        if stored is not None:
            return stored[0]
        return weights_bytes(self.module(name))  # a hand-made folder with only config.json

    def weights_digest(self, spec: ModelSpec) -> str:
        """`sha256:<hex>` of the model's config and weights file: what a session's state was
        computed under (disk I/O: call off the event loop)."""
        digest = hashlib.sha256(spec.config.canonical_key.encode())
        stored = self.repo.read_weights(spec.name)
        if stored is None:
            digest.update(b"seeded")
        else:
            data, stamp = stored
            if spec.version is not None and spec.version[1] not in (None, stamp):
                raise ModelConflict(
                    f"the weights of model {spec.name!r} changed meanwhile; try again"
                )
            digest.update(data)
        return f"sha256:{digest.hexdigest()}"

    def is_loaded(self, entry: ModelSpec) -> bool:
        with self._lock:
            built = self._built.get(f"model:{entry.name}")
        return built is not None and built.version == entry.version

    def module(self, name: str, expect: RNNConfig | None = None) -> nn.RNNBase:
        """The module for the model's current version, built or reloaded if need be.

        `expect` is the config a request was validated against: if the model was deleted and
        registered again with another config meanwhile, the request is refused, not run.
        """
        entry = self.get(name)  # the repository's current version (two stats)
        if expect is not None and entry.config != expect:
            raise ModelConflict(f"model {name!r} was replaced by another config; send it again")
        key = f"model:{name}"
        built = self._cached(key, entry.version)
        if built is not None:
            return built
        with self._build_lock(key):
            entry = self.get(name)
            built = self._cached(key, entry.version)
            if built is not None:
                return built
            self._metrics.registry_events.labels("miss").inc()
            if entry.version is None:  # registered models always have one
                raise ModelNotFound(f"no model named {name!r} is registered")
            config_stamp = entry.version[0]
            try:
                stored = self.repo.read_weights(name, config_stamp)
            except ModelChanged:
                raise ModelConflict(
                    f"model {name!r} was changed concurrently while it loaded; send it again"
                ) from None
            try:
                if stored is None:
                    module = self._count_build(lambda: build_seeded(entry.config, self.device))
                    weights_version = None
                else:
                    data, weights_version = stored
                    tensors = parse_weights(data, entry.config)
                    module = self._count_build(
                        lambda: module_from_weights(entry.config, tensors, self.device)
                    )
            except InvalidInput as exc:
                raise NotReady(
                    f"model {name!r} cannot be loaded from the repository: {exc.detail}"
                ) from None
            self._insert(key, _Built(module, _nbytes(module), (config_stamp, weights_version)))
            return module

    def is_built(self, spec: ModelSpec) -> bool:
        """Whether the module for this version of the model is built now (no disk access)."""
        key = f"inline:{spec.config.canonical_key}" if spec.inline else f"model:{spec.name}"
        with self._lock:
            built = self._built.get(key)
        return built is not None and built.version == spec.version

    def module_for(self, spec: ModelSpec) -> nn.RNNBase:
        """The engine's one way to a module: seeded for inline configs, else the repository's."""
        if spec.inline:
            return self.inline_module(spec.config)
        return self.module(spec.name, spec.config)

    # --- inline configs -----------------------------------------------------------------------
    def inline(self, config: RNNConfig) -> ModelSpec:
        """The spec of an inline config, within this server's limits."""
        self.check_limits(config)
        return ModelSpec.of_inline(config)

    def inline_module(self, config: RNNConfig) -> nn.RNNBase:
        """A module for an inline config, shared by every request with an equal config."""
        key = f"inline:{config.canonical_key}"
        built = self._cached(key, None)
        if built is not None:
            return built
        with self._build_lock(key):
            built = self._cached(key, None)
            if built is not None:
                return built
            self._metrics.registry_events.labels("miss").inc()
            module = self._count_build(lambda: build_seeded(config, self.device))
            self._insert(key, _Built(module, _nbytes(module), None))
            return module

    def unload(self, spec: ModelSpec) -> bool:
        """Drop the model's built module from the device (the next request builds it again)."""
        key = f"inline:{spec.config.canonical_key}" if spec.inline else f"model:{spec.name}"
        with self._lock:
            removed = self._built.pop(key, None) is not None
            if removed:
                self._publish()
        if removed and self.device.type == "cuda":
            torch.cuda.empty_cache()
        return removed

    def loaded(self) -> tuple[int, int]:
        """(modules built, bytes of their parameters)."""
        with self._lock:
            return len(self._built), sum(b.nbytes for b in self._built.values())

    # --- internals ----------------------------------------------------------------------------
    def _check_quota(self, new_models: int, new_bytes: int) -> None:
        models, nbytes = self.repo.usage()
        if models + new_models > self.settings.max_models:
            raise StorageFull(
                f"the repository holds {models} models; the quota is {self.settings.max_models} "
                "(RNN_SERVE_MAX_MODELS): delete one first"
            )
        if nbytes + new_bytes > self.settings.max_repository_bytes:
            raise StorageFull(
                f"the repository's weights take {nbytes} bytes and this needs {new_bytes} more; "
                f"the quota is {self.settings.max_repository_bytes} bytes "
                "(RNN_SERVE_MAX_REPOSITORY_BYTES)"
            )

    def _lookup(self, name: str) -> ModelSpec | None:
        # Fast path (one stat): nothing changed through any Repository since this model was last
        # verified, and that was recently (changes made by hand are seen within that time).
        generation = self.repo.generation()
        verified = self._verified.get(name)
        if (
            verified is not None
            and generation is not None
            and verified[0] == generation
            and time.monotonic() - verified[1] < self.settings.repository_recheck_s
        ):
            entry = self._models.get(name)
            if entry is not None:
                return entry
        spec = self._lookup_files(name)
        if spec is None:
            self._verified.pop(name, None)
        elif generation is not None:
            self._verified[name] = (generation, time.monotonic())
        return spec

    def _lookup_files(self, name: str) -> ModelSpec | None:
        version = self.repo.version(name)
        with self._lock:
            if version is None:
                self._forget(name)
                return None
            entry = self._models.get(name)
        if entry is not None and entry.version == version:
            return entry
        try:
            stored = self.repo.read(name)
        except CorruptModel as exc:
            raise NotReady(f"model {name!r} has an unreadable config in the repository") from exc
        if stored is None:
            return None
        entry = ModelSpec(name, stored.config, stored.version)
        with self._lock:
            self._models[name] = entry
        return entry

    def _forget(self, name: str) -> None:  # caller holds the lock
        self._models.pop(name, None)
        self._verified.pop(name, None)
        if self._built.pop(f"model:{name}", None) is not None:
            self._publish()

    def _cached(self, key: str, version: Version | None) -> nn.RNNBase | None:
        """The built module for `key` if it is of `version` (None for inline modules)."""
        with self._lock:
            built = self._built.get(key)
            if built is None or built.version != version:
                return None  # stale (newer files on disk): the next build replaces it
            self._built.move_to_end(key)
        self._metrics.registry_events.labels("hit").inc()
        return built.module

    def _build_lock(self, key: str) -> threading.Lock:
        with self._lock:
            return self._build_locks.setdefault(key, threading.Lock())

    def _count_build(self, build: Callable[[], nn.RNNBase]) -> nn.RNNBase:
        self._metrics.registry_events.labels("build").inc()
        return build()

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
