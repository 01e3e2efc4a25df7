"""The model repository and statistics extensions' door (Open Inference Protocol): what the v2
routes ask of the models besides inference. Lookups run off the event loop; the routes touch no
registry, backend or metrics themselves (compare KServe's ModelRepositoryExtension)."""

from __future__ import annotations

from anyio import to_thread
from prometheus_client.samples import Sample

from service.engine.backend import Backend
from service.metrics import Metrics
from service.registry import ModelSpec, Registry
from service.schemas.api import check_model_name


class RepositoryExtension:
    def __init__(
        self, registry: Registry, backend: Backend, metrics: Metrics, max_batch_sequences: int
    ) -> None:
        self._registry, self._backend, self._metrics = registry, backend, metrics
        self.max_batch_sequences = max_batch_sequences

    async def model(self, name: str) -> ModelSpec:
        """A registered model's spec (422 for a bad name, 404), read on a thread."""
        return await to_thread.run_sync(self._registry.get, check_model_name(name))

    async def index(self) -> list[tuple[ModelSpec, bool]]:
        """Every model, by name, and whether it is built on the device now."""
        specs = await to_thread.run_sync(self._registry.list)
        return [(s, await self._backend.is_loaded(s)) for s in sorted(specs, key=lambda s: s.name)]

    async def names(self) -> list[str]:
        return sorted(s.name for s in await to_thread.run_sync(self._registry.list))

    async def load(self, name: str) -> None:
        await self._backend.load(await self.model(name))

    async def unload(self, name: str) -> None:
        await self._backend.unload(await self.model(name))

    async def samples(self, *families: str) -> dict[str, list[Sample]]:
        """The metric families' samples, summed over every process (read on a thread)."""
        return await to_thread.run_sync(lambda: self._metrics.samples(*families))
