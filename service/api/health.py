"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import Request, Response

from service.api import problems, routing
from service.api.deps import MetricsDep, ReadinessDep, RegistryDep
from service.errors import ModelNotFound, NotReady
from service.metrics import CONTENT_TYPE
from service.schemas.api import Status

router = routing.router("", "health")


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> Status:
    return Status(status="ok")


@router.get(
    "/readyz",
    summary="Readiness: 503 until the default model is warm, and while draining",
    responses=problems.responses(503),
)
async def readyz(readiness: ReadinessDep, registry: RegistryDep, request: Request) -> Status:
    if not readiness.ready:
        raise NotReady(readiness.reason)
    # Ready means the default model can be served now: not deleted or broken by hand since.
    name = request.state.settings.default_model_name
    try:
        registry.get(name)
    except ModelNotFound:
        raise NotReady(f"the default model {name!r} is gone from the model repository") from None
    return Status(status="ready")


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(m: MetricsDep) -> Response:
    return Response(m.render(), media_type=CONTENT_TYPE)
