"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import Response

from service.api import problems, routing
from service.api.deps import MetricsDep, ReadinessDep
from service.errors import NotReady
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
async def readyz(readiness: ReadinessDep) -> Status:
    if not readiness.ready:
        raise NotReady(readiness.reason)
    return Status(status="ready")


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(m: MetricsDep) -> Response:
    return Response(m.render(), media_type=CONTENT_TYPE)
