"""Annotated dependency aliases. The lifespan's state (not module globals) holds the data plane,
the one object routes are handed."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Path
from starlette.requests import Request

from service.core.schemas.api import MODEL_NAME_PATTERN
from service.dataplane.plane import DataPlane


# async on purpose: FastAPI runs a plain `def` dependency in a worker thread, which would cost a
# thread hop (and a GIL handoff with the torch worker) for this trivial lookup.
async def _plane(request: Request) -> DataPlane:
    return cast(DataPlane, request.state.plane)


PlaneDep = Annotated[DataPlane, Depends(_plane)]
ModelNamePath = Annotated[
    str, Path(pattern=MODEL_NAME_PATTERN, description="A registered model's name.")
]
