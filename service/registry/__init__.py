"""Model registry: seeded builds, the module cache, weights and the repository on disk."""

from service.registry.build import TORCH_DTYPES, build_seeded, prepare_module
from service.registry.registry import ModelSpec, Registry

__all__ = ["TORCH_DTYPES", "ModelSpec", "Registry", "build_seeded", "prepare_module"]
