"""Registered models, durable in the repository, and the server's bounds on them.

- Models live in the repository (`ModelStorage`); memory holds what was last seen there. Every
  lookup checks the repository's version (two stats), so models registered, re-uploaded or
  deleted by another replica sharing it are served, reloaded or refused without a restart.
- Quotas (models, bytes) and the size limits of a config are checked here, before anything is
  written or built.
- Torch-free: front-end processes use it as the engine does. Whatever needs torch is handed in
  (seeded weights, at registration) or is the engine's (`service.engine.modules`).
- Methods touch disk: call them off the event loop (a thread), except `check_limits`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from service.catalog.cache import WeightsCache
from service.catalog.folder import Repository
from service.catalog.objects import ObjectRepository, is_object_url
from service.catalog.spec import ModelSpec
from service.catalog.statedict import rename_safetensors
from service.catalog.storage import CorruptModel, FileStamp, ModelChanged, ModelStorage
from service.catalog.weights import check_weights
from service.core.errors import (
    InvalidInput,
    Loc,
    ModelConflict,
    ModelNotFound,
    NotReady,
    StorageFull,
    StorageUnavailable,
)
from service.core.metrics import Metrics
from service.core.schemas.config import RNNConfig
from service.core.settings import Settings

log = logging.getLogger("rnn_serve.catalog")
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


class Catalog:
    def __init__(
        self, settings: Settings, metrics: Metrics, storage: ModelStorage | None = None
    ) -> None:
        self.settings = settings
        self.repo = storage if storage is not None else open_storage(settings)
        self._metrics = metrics
        self._lock = threading.Lock()
        self._models: dict[str, ModelSpec] = {}
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

    def inline(self, config: RNNConfig) -> ModelSpec:
        """The spec of an inline config, within this server's limits."""
        self.check_limits(config)
        return ModelSpec.of_inline(config)

    # --- named models -------------------------------------------------------------------------
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

    def find(self, name: str) -> ModelSpec | None:
        """The model as the repository has it now, or None."""
        return self._lookup(name)

    def register(
        self, name: str, config: RNNConfig, seeded: Callable[[], bytes]
    ) -> tuple[ModelSpec, bool]:
        """Register `name` durably with the `seeded()` weights; idempotent for the same config,
        ModelConflict for another."""
        self.check_limits(config)
        existing = self._lookup(name)
        if existing is None:
            weights = seeded()
            self._check_quota(new_models=1, new_bytes=len(weights))
            with _storage(f"registering model {name!r}"):
                created = self.repo.create(name, config, weights)
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

    def get(self, name: str, arrived: float | None = None) -> ModelSpec:
        """The model as the repository has it now (one stat when nothing changed), or, for a
        request that `arrived` at that perf_counter reading, as of a moment after it arrived
        (a stat made since is shared: `ModelStorage.generation`)."""
        entry = self._lookup(name, arrived)
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

    def upload(
        self, name: str, data: bytes, prefixes: Mapping[str, str] | None = None
    ) -> ModelSpec:
        """Check, then durably replace a model's weights; the old ones serve until then (the
        engine builds a new module for the new version: a module is never changed in place).
        A trained module's names (`lstm.weight_ih_l0`, `fc.weight`) are stored as the model's
        (`service.catalog.statedict`)."""
        entry = self.get(name)
        data = rename_safetensors(data, entry.config, prefixes)
        check_weights(data, entry.config)
        self._check_quota(new_models=0, new_bytes=len(data) - self.repo.weights_size(name))
        try:
            with _storage(f"uploading the weights of model {name!r}"):
                self.repo.replace_weights(name, data)
        except FileNotFoundError:
            raise ModelNotFound(f"model {name!r} was deleted during the upload") from None
        entry = self.get(name)
        self._metrics.registry_events.labels("upload").inc()
        return entry

    def stored_weights(self, name: str) -> bytes | None:
        """The current weights file, byte for byte; None for a folder made by hand with only a
        config.json (its weights are the seeded ones)."""
        self.get(name)
        stored = self.repo.read_weights(name)
        return None if stored is None else stored[0]

    def weights_digest(self, spec: ModelSpec) -> str:
        """`sha256:<hex>` of the model's config and weights file: what a session's state was
        computed under."""
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

    def read_weights(self, spec: ModelSpec) -> tuple[bytes, FileStamp] | None:
        """The weights of exactly this version's config (ModelConflict if it was replaced
        meanwhile), or None when the model has only its seeded ones."""
        if spec.version is None:  # inline configs are seeded
            return None
        try:
            return self.repo.read_weights(spec.name, spec.version[0])
        except ModelChanged:
            raise ModelConflict(
                f"model {spec.name!r} was changed concurrently while it loaded; send it again"
            ) from None

    def close(self) -> None:
        self.repo.close()

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

    def _lookup(self, name: str, arrived: float | None = None) -> ModelSpec | None:
        # Fast path (one stat): nothing changed through any Repository since this model was last
        # verified, and that was recently (changes made by hand are seen within that time).
        generation = self.repo.generation(arrived)
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
            raise NotReady(
                f"model {name!r} has an unreadable config in the repository ({exc}): fix or "
                "delete it there"
            ) from exc
        if stored is None:
            return None
        entry = ModelSpec(name, stored.config, stored.version)
        with self._lock:
            self._models[name] = entry
        return entry

    def _forget(self, name: str) -> None:  # caller holds the lock
        self._models.pop(name, None)
        self._verified.pop(name, None)


def open_storage(settings: Settings) -> ModelStorage:
    """The repository RNN_SERVE_MODEL_REPOSITORY names: an object store's URL, or a folder."""
    location = settings.model_repository
    if is_object_url(location):
        cache = WeightsCache(settings.model_cache, settings.model_cache_bytes)
        return ObjectRepository(location, cache, settings.repository_recheck_s)
    return Repository(Path(location))
