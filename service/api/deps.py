"""Annotated dependency aliases. The lifespan's state (not module globals) holds the objects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import Depends, Path
from starlette.requests import Request

from service.metrics import Metrics
from service.registry import Registry
from service.schemas.api import MODEL_NAME_PATTERN


@dataclass
class Readiness:
    """Ready once the default model is built and warm; not ready while draining."""

    ready: bool = False
    reason: str = "warming up the default model"


# async on purpose: FastAPI runs a plain `def` dependency in a worker thread, which would cost a
# thread hop (and a GIL handoff with the torch worker) for each of these trivial lookups.
async def _registry(request: Request) -> Registry:
    return cast(Registry, request.state.registry)


async def _metrics(request: Request) -> Metrics:
    return cast(Metrics, request.state.metrics)


async def _readiness(request: Request) -> Readiness:
    return cast(Readiness, request.state.readiness)


RegistryDep = Annotated[Registry, Depends(_registry)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
ReadinessDep = Annotated[Readiness, Depends(_readiness)]
ModelNamePath = Annotated[
    str, Path(pattern=MODEL_NAME_PATTERN, description="A registered model's name.")
]
