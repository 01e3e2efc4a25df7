"""The models' door: what the routes ask of the model repository besides inference — v1's
registration, upload, export and deletion, and the Open Inference Protocol's repository and
statistics extensions. Disk work runs off the event loop; the routes touch no catalog, backend or
metrics themselves (compare KServe's ModelRepositoryExtension)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from anyio import to_thread
from prometheus_client.samples import Sample

from service.catalog.catalog import Catalog
from service.catalog.spec import ModelSpec
from service.core.errors import ModelConflict, ModelNotFound
from service.core.metrics import Metrics
from service.core.schemas.api import check_model_name
from service.core.schemas.config import RNNConfig
from service.engine.backend import Backend


class RepositoryExtension:
    def __init__(
        self, catalog: Catalog, backend: Backend, metrics: Metrics, max_batch_sequences: int
    ) -> None:
        self._catalog, self._backend, self._metrics = catalog, backend, metrics
        self.max_batch_sequences = max_batch_sequences

    async def model(self, name: str) -> ModelSpec:
        """A registered model's spec (422 for a bad name, 404), read on a thread."""
        return await to_thread.run_sync(self._catalog.get, check_model_name(name))

    async def index(self) -> list[tuple[ModelSpec, bool]]:
        """Every model, by name, and whether it is built on the device now."""
        specs = await to_thread.run_sync(self._catalog.list)
        return [(s, await self._backend.is_loaded(s)) for s in sorted(specs, key=lambda s: s.name)]

    async def names(self) -> list[str]:
        return sorted(s.name for s in await to_thread.run_sync(self._catalog.list))

    async def is_loaded(self, spec: ModelSpec) -> bool:
        return await self._backend.is_loaded(spec)

    async def load(self, name: str) -> None:
        await self._backend.load(await self.model(name))

    async def unload(self, name: str) -> None:
        await self._backend.unload(await self.model(name))

    # --- v1's models --------------------------------------------------------------------------
    async def register(self, name: str, config: RNNConfig) -> tuple[ModelSpec, bool]:
        """Register `name` with its seeded weights (drawn by the engine, only when the name is
        new); True when it was created, False when it was there with this config already."""
        self._catalog.check_limits(config)
        seeded: bytes | None = None
        if await to_thread.run_sync(self._catalog.find, name) is None:
            seeded = await self._backend.seeded_weights(config)

        def weights() -> bytes:
            if seeded is None:  # it was there a moment ago: deleted meanwhile
                raise ModelConflict(f"model {name!r} was changed concurrently; try again")
            return seeded

        return await to_thread.run_sync(self._catalog.register, name, config, weights)

    async def delete(self, name: str) -> None:
        await to_thread.run_sync(self._catalog.delete, name)
        await self._backend.end_model(name)  # its sessions end, its module goes

    async def upload(
        self, name: str, data: bytes, prefixes: Mapping[str, str] | None = None
    ) -> ModelSpec:
        """Store checked weights, then build (and warm) their module on the device, so that the
        next forward runs them at once. `prefixes`: see `service.catalog.statedict`."""
        spec = await to_thread.run_sync(self._catalog.upload, name, data, prefixes)
        with contextlib.suppress(ModelNotFound, ModelConflict):  # deleted or replaced meanwhile:
            await self._backend.load(spec)  # the upload stands; nothing to warm
        return spec

    async def export(self, name: str) -> bytes:
        """The current weights as a safetensors file (the stored file, byte for byte; a folder
        made by hand with only a config.json exports its seeded weights)."""
        stored = await to_thread.run_sync(self._catalog.stored_weights, name)
        if stored is not None:
            return stored
        spec = await self.model(name)
        return await self._backend.seeded_weights(spec.config)

    async def samples(self, *families: str) -> dict[str, list[Sample]]:
        """The metric families' samples, summed over every process (read on a thread)."""
        return await to_thread.run_sync(lambda: self._metrics.samples(*families))
