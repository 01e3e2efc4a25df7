"""Model registry: seeded builds, the module cache, and (later) weights on disk."""

from service.registry.build import TORCH_DTYPES, build_seeded, prepare_module
from service.registry.registry import ModelEntry, Registry

__all__ = ["TORCH_DTYPES", "ModelEntry", "Registry", "build_seeded", "prepare_module"]
