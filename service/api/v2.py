"""Open Inference Protocol v2 (KServe / Triton): thin adapters over the data plane, with the OIP
codec (service.codecs.oip). Errors are the protocol's `{"error": "..."}` (OIPRoute)."""

from __future__ import annotations

from typing import Any

import orjson
from anyio import to_thread

from service import __version__
from service.api import routing
from service.api.auth import INFERENCE, requires
from service.api.openapi import NAME_PARAM
from service.api.routing import LeanRequest, OIPRoute
from service.codecs.oip import HEADER, OIPInfer, metadata
from service.dataplane import Answer
from service.schemas.oip import (
    ErrorBody,
    InferResponse,
    Live,
    ModelMetadata,
    ModelReady,
    Ready,
    ServerMetadata,
)

router = routing.router("/v2", "v2 (Open Inference Protocol)", OIPRoute)

EXTENSIONS = ["binary_tensor_data", "sequence"]
_ERROR = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}


def _responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"description": "error", **_ERROR} for s in statuses}


def _json(body: bytes, status: int = 200) -> Answer:
    return Answer(body, status=status)


@router.get("", summary="Server metadata", responses={200: {"model": ServerMetadata}})
async def server_metadata(request: LeanRequest) -> Answer:
    meta = ServerMetadata(name="rnn-serve", version=__version__, extensions=EXTENSIONS)
    return _json(meta.model_dump_json().encode())


@router.get("/health/live", summary="Server liveness", responses={200: {"model": Live}})
async def server_live(request: LeanRequest) -> Answer:
    return _json(orjson.dumps({"live": True}))


@router.get(
    "/health/ready",
    summary="Server readiness",
    responses={200: {"model": Ready}, **_responses(503)},
)
async def server_ready(request: LeanRequest) -> Answer:
    ready = bool(request.scope["state"]["readiness"].ready)
    return _json(orjson.dumps({"ready": ready}), 200 if ready else 503)


@router.get(
    "/models/{name}",
    summary="Model metadata",
    responses={200: {"model": ModelMetadata}, **_responses(400, 404)},
    openapi_extra={**NAME_PARAM, **requires(INFERENCE)},
)
async def model_metadata(request: LeanRequest) -> Answer:
    spec = await to_thread.run_sync(request.plane.model, request.path_params["name"])
    return _json(metadata(spec).model_dump_json().encode())


@router.get(
    "/models/{name}/ready",
    summary="Model readiness",
    responses={200: {"model": ModelReady}, **_responses(400, 404)},
    openapi_extra={**NAME_PARAM, **requires(INFERENCE)},
)
async def model_ready(request: LeanRequest) -> Answer:
    spec = await to_thread.run_sync(request.plane.model, request.path_params["name"])
    return _json(ModelReady(name=spec.name, ready=True).model_dump_json().encode())


@router.post(
    "/models/{name}/infer",
    summary="Inference (JSON, or the binary tensor data extension)",
    openapi_extra={
        **NAME_PARAM,
        **requires(INFERENCE),
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/InferRequest"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        },
    },
    responses={
        200: {"model": InferResponse, "content": {"application/octet-stream": {}}},
        **_responses(400, 404, 413, 429, 503, 504, 507),
    },
)
async def infer(request: LeanRequest) -> Answer:
    codec = OIPInfer(request.raw_body, request.header(HEADER.encode()))
    name = request.path_params["name"]
    return await request.plane.infer(
        codec, name, request.log_fields, request.key_id, request.timeout_s
    )


__all__ = ["ErrorBody", "router"]
