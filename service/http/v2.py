"""Open Inference Protocol v2 (KServe / Triton): thin adapters over the data plane, with the OIP
codec (service.codecs.oip). Errors are the protocol's `{"error": "..."}` (OIPRoute)."""

from __future__ import annotations

from typing import Any

import orjson
from prometheus_client.samples import Sample

from service import __version__
from service.catalog.spec import ModelSpec
from service.codecs.oip import HEADER, VERSION, OIPInfer, input_names, metadata, output_names
from service.codecs.pipeline import Encoded
from service.core.errors import ModelNotFound
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

EXTENSIONS = ["binary_tensor_data", "sequence", "model_repository", "statistics"]
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
    version = request.path_params.get("version")
    if version is not None and version != VERSION:
        name = request.path_params["name"]
        raise ModelNotFound(f"model {name!r} has no version {version!r}; its versions: [{VERSION}]")


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


# --- model configuration (what tritonclient's get_model_config reads) ----------------------------
def _config(spec: ModelSpec, max_batch: int) -> dict[str, Any]:
    meta = metadata(spec)
    tensors = {t.name: t for t in [*meta.inputs, *meta.outputs]}

    def entry(name: str) -> dict[str, Any]:
        t = tensors[name]
        return {"name": name, "data_type": f"TYPE_{t.datatype}", "dims": t.shape,
                "optional": name != "input"}  # fmt: skip

    return {
        "name": spec.name,
        "platform": meta.platform,
        "backend": "rnn-serve",
        "version_policy": {"specific": {"versions": [int(VERSION)]}},
        "max_batch_size": 0,  # batch dimensions are in dims (-1): the server batches itself
        "dynamic_batching": {"max_queue_delay_microseconds": 0, "max_batch_sequences": max_batch},
        "sequence_batching": {"control_input": [], "state": []},
        "input": [entry(n) for n in input_names(spec.config)],
        "output": [entry(n) for n in output_names(spec.config)],
        "parameters": {
            k: {"string_value": str(v)} for k, v in spec.config.model_dump(mode="json").items()
        },
    }


@router.get(
    "/models/{name}/config",
    summary="Model configuration (Triton's form)",
    responses=_responses(400, 404),
    openapi_extra={**NAME_PARAM, **requires(INFERENCE)},
)
async def model_config(request: LeanRequest) -> Encoded:
    repository = request.plane.repository
    spec = await repository.model(request.path_params["name"])
    return _json(orjson.dumps(_config(spec, repository.max_batch_sequences)))


# --- the model repository extension ------------------------------------------------------------
@router.post(
    "/repository/index",
    summary="Model repository index: every model, and whether it is loaded on the device",
    openapi_extra=requires(INFERENCE),
    responses=_responses(400),
)
async def repository_index(request: LeanRequest) -> Encoded:
    index = []
    for spec, loaded in await request.plane.repository.index():
        index.append({
            "name": spec.name, "version": VERSION, "state": "READY" if loaded else "UNAVAILABLE",
            "reason": "" if loaded else "not loaded on the device: a request or load builds it",
        })  # fmt: skip
    return _json(orjson.dumps(index))


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
STATS_FAMILIES = (
    "rnn_serve_stage_seconds", "rnn_serve_model_inferences", "rnn_serve_model_executions",
    "rnn_serve_model_last_inference_timestamp_seconds",
)  # fmt: skip


def _stats(collected: dict[str, list[Sample]], names: list[str]) -> dict[str, Any]:
    """Triton's statistics form, read from the Prometheus metrics (so with several front-end
    processes it counts all of them)."""
    per: dict[str, dict[tuple[str, str], float]] = {n: {} for n in names}
    for sample in collected["rnn_serve_stage_seconds"]:
        model = sample.labels.get("model")
        if model in per and sample.name.endswith(("_sum", "_count")):
            key = (sample.labels["stage"], sample.name.rsplit("_", 1)[1])
            per[model][key] = per[model].get(key, 0.0) + sample.value
    counts: dict[tuple[str, str], float] = {}
    for family in ("rnn_serve_model_inferences", "rnn_serve_model_executions"):
        for sample in collected[family]:
            if sample.name.endswith("_total"):
                tag = sample.labels.get("outcome", "execution")
                key = (sample.labels["model"], tag)
                counts[key] = counts.get(key, 0.0) + sample.value
    last = {
        s.labels["model"]: s.value
        for s in collected["rnn_serve_model_last_inference_timestamp_seconds"]
    }

    def duration(model: str, stage: str) -> dict[str, int]:
        got = per[model]
        return {"count": int(got.get((stage, "count"), 0)),
                "ns": int(got.get((stage, "sum"), 0.0) * 1e9)}  # fmt: skip

    stats = []
    for name in names:
        stages = {s: duration(name, s) for s in ("decode", "queue", "compute", "encode")}
        success = int(counts.get((name, "success"), 0))
        stats.append({
            "name": name, "version": VERSION,
            "last_inference": int(last.get(name, 0.0) * 1000),
            "inference_count": success, "execution_count": int(counts.get((name, "execution"), 0)),
            "inference_stats": {
                "success": {"count": success, "ns": sum(d["ns"] for d in stages.values())},
                "fail": {"count": int(counts.get((name, "fail"), 0)), "ns": 0},
                "queue": stages["queue"], "compute_input": stages["decode"],
                "compute_infer": stages["compute"], "compute_output": stages["encode"],
                "cache_hit": {"count": 0, "ns": 0}, "cache_miss": {"count": 0, "ns": 0},
            },
            "batch_stats": [],
        })  # fmt: skip
    return {"model_stats": stats}


async def _stats_answer(request: LeanRequest, name: str | None) -> Encoded:
    repository = request.plane.repository
    if name is None:
        names = await repository.names()
    else:
        names = [(await repository.model(name)).name]
    collected = await repository.samples(*STATS_FAMILIES)
    return _json(orjson.dumps(_stats(collected, names)))


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
