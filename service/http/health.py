"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import Response

from service.core.metrics import CONTENT_TYPE
from service.core.schemas.api import Status
from service.http import problems, routing
from service.http.deps import PlaneDep

router = routing.router("", "health")


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> Status:
    return Status(status="ok")


@router.get(
    "/readyz",
    summary="Readiness: 503 until the default model is warm, and while draining",
    responses=problems.responses(503),
)
async def readyz(plane: PlaneDep) -> Status:
    plane.check_ready()
    return Status(status="ready")


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(plane: PlaneDep) -> Response:
    return Response(plane.metrics_exposition(), media_type=CONTENT_TYPE)
