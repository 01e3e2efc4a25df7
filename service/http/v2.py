"""Open Inference Protocol v2 (KServe / Triton): thin adapters over the data plane, with the OIP
codec (service.codecs.oip). Errors are the protocol's `{"error": "..."}` (OIPRoute)."""

from __future__ import annotations

from typing import Any

import orjson

from service import __version__
from service.codecs.oip import (
    EXTENSIONS,
    HEADER,
    STATS_FAMILIES,
    OIPInfer,
    check_version,
    index_entries,
    metadata,
    statistics,
)
from service.codecs.oip import (
    model_config as config_of,
)
from service.codecs.pipeline import Encoded
from service.core.schemas.oip import (
    ErrorBody,
    InferResponse,
    Live,
    ModelMetadata,
    ModelReady,
    Ready,
    ServerMetadata,
)
from service.dataplane.keys import ADMIN, INFERENCE
from service.http import routing
from service.http.answer import Answer
from service.http.auth import requires
from service.http.openapi import NAME_PARAM
from service.http.routing import LeanRequest, OIPRoute

router = routing.router("/v2", "v2 (Open Inference Protocol)", OIPRoute)

_ERROR = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}


def _responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"description": "error", **_ERROR} for s in statuses}


# an infer's OpenAPI request body and answers (the unversioned and the versioned path)
INFER_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/InferRequest"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}
INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": InferResponse, "content": {"application/octet-stream": {}}},
    **_responses(400, 404, 413, 429, 503, 504, 507),
}


def _json(body: bytes, status: int = 200) -> Encoded:
    return Answer(body, status=status)


@router.get("", summary="Server metadata", responses={200: {"model": ServerMetadata}})
async def server_metadata(request: LeanRequest) -> Encoded:
    meta = ServerMetadata(name="rnn-serve", version=__version__, extensions=EXTENSIONS)
    return _json(meta.model_dump_json().encode())


@router.get("/health/live", summary="Server liveness", responses={200: {"model": Live}})
async def server_live(request: LeanRequest) -> Encoded:
    return _json(orjson.dumps({"live": True}))


@router.get(
    "/health/ready",
    summary="Server readiness",
    responses={200: {"model": Ready}, **_responses(503)},
)
async def server_ready(request: LeanRequest) -> Encoded:
    ready = request.plane.readiness.ready
    return _json(orjson.dumps({"ready": ready}), 200 if ready else 503)


@router.get(
    "/models/{name}",
    summary="Model metadata",
    responses={200: {"model": ModelMetadata}, **_responses(400, 404)},
    openapi_extra={**NAME_PARAM, **requires(INFERENCE)},
)
async def model_metadata(request: LeanRequest) -> Encoded:
    spec = await request.plane.repository.model(request.path_params["name"])
    return _json(metadata(spec).model_dump_json().encode())


@router.get(
    "/models/{name}/ready",
    summary="Model readiness",
    responses={200: {"model": ModelReady}, **_responses(400, 404)},
    openapi_extra={**NAME_PARAM, **requires(INFERENCE)},
)
async def model_ready(request: LeanRequest) -> Encoded:
    spec = await request.plane.repository.model(request.path_params["name"])
    return _json(ModelReady(name=spec.name, ready=True).model_dump_json().encode())


@router.post(
    "/models/{name}/infer",
    summary="Inference (JSON, or the binary tensor data extension)",
    openapi_extra={
        **NAME_PARAM,
        **requires(INFERENCE),
        "requestBody": INFER_BODY,
    },
    responses=INFER_RESPONSES,
)
async def infer(request: LeanRequest) -> Encoded:
    codec = OIPInfer(request.raw_body, request.header(HEADER.encode()))
    name = request.path_params["name"]
    return await request.plane.infer(request.context, codec, name)


# --- versioned paths: the one version the metadata advertises ------------------------------------
VERSION_PARAM: dict[str, Any] = {
    "parameters": [
        *NAME_PARAM["parameters"],
        {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}},
    ]
}


def _versioned(request: LeanRequest) -> None:
    """404 for a version other than the one every model has (the metadata's `versions`)."""
    check_version(request.path_params["name"], request.path_params.get("version"))


@router.get(
    "/models/{name}/versions/{version}",
    summary="Model metadata (versioned path)",
    responses={200: {"model": ModelMetadata}, **_responses(400, 404)},
    openapi_extra={**VERSION_PARAM, **requires(INFERENCE)},
)
async def model_version_metadata(request: LeanRequest) -> Encoded:
    _versioned(request)
    return await model_metadata(request)


@router.get(
    "/models/{name}/versions/{version}/ready",
    summary="Model readiness (versioned path)",
    responses={200: {"model": ModelReady}, **_responses(400, 404)},
    openapi_extra={**VERSION_PARAM, **requires(INFERENCE)},
)
async def model_version_ready(request: LeanRequest) -> Encoded:
    _versioned(request)
    return await model_ready(request)


@router.post(
    "/models/{name}/versions/{version}/infer",
    summary="Inference (versioned path)",
    openapi_extra={
        **VERSION_PARAM,
        **requires(INFERENCE),
        "requestBody": INFER_BODY,
    },
    responses=INFER_RESPONSES,
)
async def version_infer(request: LeanRequest) -> Encoded:
    _versioned(request)
    return await infer(request)


@router.get(
    "/models/{name}/config",
    summary="Model configuration (Triton's form)",
    responses=_responses(400, 404),
    openapi_extra={**NAME_PARAM, **requires(INFERENCE)},
)
async def model_config(request: LeanRequest) -> Encoded:
    repository = request.plane.repository
    spec = await repository.model(request.path_params["name"])
    return _json(orjson.dumps(config_of(spec, repository.max_batch_sequences)))


# --- the model repository extension ------------------------------------------------------------
@router.post(
    "/repository/index",
    summary="Model repository index: every model, and whether it is loaded on the device",
    openapi_extra=requires(INFERENCE),
    responses=_responses(400),
)
async def repository_index(request: LeanRequest) -> Encoded:
    return _json(orjson.dumps(index_entries(await request.plane.repository.index())))


@router.post(
    "/repository/models/{name}/load",
    summary="Load a model: build it on the device and warm it",
    openapi_extra={**NAME_PARAM, **requires(ADMIN)},
    responses=_responses(400, 404, 503, 507),
)
async def repository_load(request: LeanRequest) -> Encoded:
    await request.plane.repository.load(request.path_params["name"])
    return _json(b"{}")


@router.post(
    "/repository/models/{name}/unload",
    summary="Unload a model: free its device memory (it stays registered; a request reloads it)",
    openapi_extra={**NAME_PARAM, **requires(ADMIN)},
    responses=_responses(400, 404),
)
async def repository_unload(request: LeanRequest) -> Encoded:
    await request.plane.repository.unload(request.path_params["name"])
    return _json(b"{}")


# --- the statistics extension --------------------------------------------------------------------
async def _stats_answer(request: LeanRequest, name: str | None) -> Encoded:
    repository = request.plane.repository
    if name is None:
        names = await repository.names()
    else:
        names = [(await repository.model(name)).name]
    collected = await repository.samples(*STATS_FAMILIES)
    return _json(orjson.dumps(statistics(collected, names)))


@router.get(
    "/models/stats",
    summary="Inference statistics of every model (counts; queue and compute durations)",
    openapi_extra=requires(INFERENCE),
    responses=_responses(400),
)
async def all_stats(request: LeanRequest) -> Encoded:
    return await _stats_answer(request, None)


@router.get(
    "/models/{name}/stats",
    summary="A model's inference statistics",
    openapi_extra={**NAME_PARAM, **requires(INFERENCE)},
    responses=_responses(400, 404),
)
async def model_stats(request: LeanRequest) -> Encoded:
    return await _stats_answer(request, request.path_params["name"])


@router.get(
    "/models/{name}/versions/{version}/stats",
    summary="A model's inference statistics (versioned path)",
    openapi_extra={**VERSION_PARAM, **requires(INFERENCE)},
    responses=_responses(400, 404),
)
async def model_version_stats(request: LeanRequest) -> Encoded:
    _versioned(request)
    return await _stats_answer(request, request.path_params["name"])


@router.api_route(
    "/{rest:path}",
    methods=["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"],
    include_in_schema=False,
)
async def unknown(request: LeanRequest) -> Encoded:
    """Every other /v2 path: the protocol's {"error"} body (tritonclient decodes no other)."""
    method, path = request.scope["method"], request.scope["path"]
    return _json(orjson.dumps({"error": f"no route {method} {path}"}), 404)


# /v2/models/stats before /v2/models/{name}, which would take "stats" for a model's name
router.routes.sort(key=lambda r: getattr(r, "path", "") != "/v2/models/stats")

__all__ = ["ErrorBody", "router"]
